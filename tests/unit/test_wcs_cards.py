"""io/wcs_cards.py: card text, numpy TAN-SIP / TPV fidelity and the direct WCS builder agree with astropy."""

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.fits.card import _format_value
from astropy.wcs import WCS

from jointcal_core.io._common import wcs_from_header
from jointcal_core.io.scamp_head import fit_tpv
from jointcal_core.io.wcs_cards import (
    card,
    fast_celestial_wcs,
    header_only_fits_bytes,
    sample_ccd,
    tan_sip_export,
    tpv_export,
)
from jointcal_core.io.wcs_fits import fit_tan_sip, measure_fidelity, wcs_to_header, write_wcs_fits
from jointcal_core.projection import tangent_to_sky

BBOX = (-0.5, -0.5, 2047.5, 4175.5)


def mapping(x, y):
    """A smooth non-polynomial CCD mapping (needs order 2 for 1 mas)."""
    u, v = (x - 1000) / 1000, (y - 2000) / 2000
    xi = u * 0.05 + 1e-5 * v ** 2 + 3e-6 * u ** 3 + 1e-6 * np.sin(3 * u) + 0.01
    eta = v * 0.1 + 2e-5 * u * v + 1e-6 * np.cos(2 * v)
    return tangent_to_sky(xi, eta, 150.0, 2.0)


def test_cards_are_formatted_as_astropy_formats_them():
    rng = np.random.default_rng(0)
    values = list(rng.normal(size=500) * 10.0 ** rng.integers(-20, 20, 500)) + [1e-5, 0.0, 1024.5, 3, "RA---TAN"]
    for v in values:
        assert card("KEY", v, "a comment") == str(fits.Card("KEY", v, "a comment"))
        assert card("KEY", v)[10:30] == _format_value(v)[:20]


@pytest.mark.parametrize("tangent", [(150.0, 2.0), None])
def test_exports_match_the_astropy_measured_fitters(tmp_path, tangent):
    samples = sample_ccd(mapping, BBOX, tangent)
    sip_cards, sip_report = tan_sip_export(samples)
    tpv_cards, tpv_report = tpv_export(samples)
    wcs, report = fit_tan_sip(mapping, BBOX, tangent)
    _, report_tpv = fit_tpv(mapping, BBOX, tangent)
    assert (sip_report.order, tpv_report.order) == (report.order, report_tpv.order) == (2, 2)
    for cards, mine in ((sip_cards, sip_report), (tpv_cards, tpv_report)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            back = WCS(fits.Header.fromstring("".join(cards)))
        rms, worst = measure_fidelity(back, mapping, samples.x_chk, samples.y_chk)
        assert abs(rms - mine.rms_mas) < 1e-3 and abs(worst - mine.max_mas) < 1e-3
    # the header-only file is what write_wcs_fits writes, card for card
    write_wcs_fits(tmp_path / "a.fits", wcs, 2048, 4176)
    size = [card("IMAGEW", 2048, "[pix] CCD width (NAXIS1 of the image)"),
            card("IMAGEH", 4176, "[pix] CCD height (NAXIS2 of the image)")]
    (tmp_path / "b.fits").write_bytes(header_only_fits_bytes(size + sip_cards))
    ours, theirs = fits.getheader(tmp_path / "b.fits"), fits.getheader(tmp_path / "a.fits")
    assert list(ours.keys()) == list(theirs.keys())
    for key in ours:
        assert ours[key] == pytest.approx(theirs[key], rel=1e-9, abs=1e-18) if isinstance(ours[key], float) \
            else ours[key] == theirs[key]


def test_fast_wcs_equals_astropy_for_tan_sip_and_tpv():
    header, _ = fit_tpv(mapping, BBOX, (150.0, 2.0))
    header["NAXIS"], header["NAXIS1"], header["NAXIS2"] = 2, 2048, 4176
    wcs, _ = fit_tan_sip(mapping, BBOX, (150.0, 2.0))
    sip = wcs_to_header(wcs)
    sip["NAXIS"], sip["NAXIS1"], sip["NAXIS2"] = 2, 2048, 4176
    x, y = np.random.default_rng(1).uniform(0, 2047, (2, 300))
    for h in (header, sip):
        fast, full = fast_celestial_wcs(h), wcs_from_header(h, path="test")
        assert fast is not None and fast.pixel_shape == full.pixel_shape
        np.testing.assert_allclose(fast.all_pix2world(x, y, 0), full.all_pix2world(x, y, 0), rtol=0, atol=1e-12)


def test_fast_wcs_declines_what_it_does_not_handle():
    base = fits.Header([("CTYPE1", "RA---TAN"), ("CTYPE2", "DEC--TAN"), ("CRVAL1", 10.0), ("CRVAL2", 5.0),
                        ("CRPIX1", 1.0), ("CRPIX2", 1.0), ("CD1_1", 1e-4), ("CD2_2", 1e-4)])
    assert fast_celestial_wcs(base) is not None
    for key, value in (("PC1_1", 1.0), ("LONPOLE", 180.0), ("PV2_1", 1.0), ("CTYPE1A", "RA---TAN")):
        h = base.copy()
        h[key] = value
        assert fast_celestial_wcs(h) is None, key
    h = base.copy()
    h["CTYPE1"], h["CTYPE2"] = "RA---ZEA", "DEC--ZEA"
    assert fast_celestial_wcs(h) is None
    h = base.copy()
    h["CD2_2"] = 0.0
    assert fast_celestial_wcs(h) is None


def _batch_of(samples):
    from jointcal_core.io.wcs_batch import SampleBatch

    s0 = samples[0]
    return SampleBatch(s0.centre, s0.u, s0.v, s0.x_chk, s0.y_chk, np.array([s.crval for s in samples]),
                       np.stack([s.xi for s in samples]), np.stack([s.eta for s in samples]),
                       np.stack([s.xi_chk for s in samples]), np.stack([s.eta_chk for s in samples]))


def test_batched_export_equals_the_per_ccd_export():
    from jointcal_core.io.wcs_batch import batch_start_orders, tan_sip_batch, tpv_batch
    from jointcal_core.io.wcs_cards import start_order

    def shifted(dx, scale):
        return lambda x, y: mapping(x + dx, y * scale)

    maps = [mapping, shifted(300.0, 1.0), shifted(-500.0, 1.01), lambda x, y: tangent_to_sky(
        (x - 1000) * 5e-5 + 2e-12 * (x - 1000) ** 3, (y - 2000) * 5e-5 + 0.02, 150.0, 2.0)]
    samples = [sample_ccd(m, BBOX, (150.0, 2.0)) for m in maps]
    batch = _batch_of(samples)
    for rms, worst in ((1.0, 3.0), (0.01, 0.03)):
        starts = batch_start_orders(batch, rms_mas=rms, max_mas=worst)
        assert starts.tolist() == [start_order(s, rms_mas=rms, max_mas=worst) for s in samples]
        sip, sip_reports = tan_sip_batch(batch, starts, rms_mas=rms, max_mas=worst)
        tpv, tpv_reports = tpv_batch(batch, starts, rms_mas=rms, max_mas=worst)
        for k, s in enumerate(samples):
            for (text, report), (cards, mine) in (((sip[k], sip_reports[k]), tan_sip_export(s, rms_mas=rms, max_mas=worst)),
                                                  ((tpv[k], tpv_reports[k]), tpv_export(s, rms_mas=rms, max_mas=worst))):
                assert report.order == mine.order and report.meets_limits == mine.meets_limits
                assert report.rms_mas == pytest.approx(mine.rms_mas, abs=1e-6)
                assert report.max_mas == pytest.approx(mine.max_mas, abs=1e-6)
                np.testing.assert_allclose(report.inverse_max_pix, mine.inverse_max_pix, atol=1e-9)
                images = [text[i:i + 80] for i in range(0, len(text), 80)]
                assert [c[:8] + c[30:] for c in images] == [c[:8] + c[30:] for c in cards]   # keys, comments
                for ours, theirs in zip(images, cards):     # CRVAL, CRPIX, CD: the same numbers
                    if ours[:2] in ("CR", "CD"):
                        assert float(ours[10:30]) == pytest.approx(float(theirs[10:30]), rel=1e-12), ours
                # the polynomial coefficients of noise-level terms are ill-determined: compare the mappings
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ours_wcs, theirs_wcs = (WCS(fits.Header.fromstring(t)) for t in (text, "".join(cards)))
                a = np.array(ours_wcs.all_pix2world(s.x_chk, s.y_chk, 0))
                b = np.array(theirs_wcs.all_pix2world(s.x_chk, s.y_chk, 0))
                assert np.max(np.abs(a - b)) * 3.6e6 < 1e-6
                if ours_wcs.sip is not None:
                    foc = ours_wcs.sip_pix2foc(np.stack([s.x_chk, s.y_chk], 1), 0)
                    assert np.max(np.abs(ours_wcs.sip_foc2pix(foc, 0) - theirs_wcs.sip_foc2pix(foc, 0))) < 1e-8
    # at least one CCD needed a higher order than another, and a SIP header was written
    assert len({r.order for r in sip_reports}) > 1 and "A_ORDER" in sip[0]


def test_card_templates_write_what_card_writes():
    from jointcal_core.io.wcs_text import float_texts, rounded_floats
    from jointcal_core.io.wcs_cards import _round_array

    rng = np.random.default_rng(3)
    values = rng.normal(size=400) * 10.0 ** rng.integers(-20, 20, 400)
    assert [f"{t:>20}" for t in float_texts(values)] == [card("K", float(v))[10:30] for v in values]
    np.testing.assert_array_equal(rounded_floats(values), _round_array(values))
