"""calibration.json: exact record of polynomial models, round trip, evaluation, errors."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from jointcal_core.calibration import Calibration, ChebyshevField, load_calibration
from jointcal_core.exceptions import InputError
from jointcal_core.io.wcs_fits import fit_tan_sip
from jointcal_core.projection import angular_separation_arcsec, tangent_to_sky

BBOX = (-0.5, -0.5, 2047.5, 4611.5)
TANGENT = (214.5, 52.5)
KEYS = [(849375, 12), (849375, 13), (850587, 12)]


def pixel_to_tangent(k: int):
    """Order-5 polynomial in pixels (a jointcal constrained model: chip affine then visit order 5),
    on a visit tangent plane whose tangent point is ~0.4 deg off the CCD."""
    def func(x, y):
        fx = -0.4 + 0.01 * k + 5.19e-5 * (np.asarray(x) - 1024) - 2.8e-7 * (np.asarray(y) - 2306)
        fy = 0.3 - 3.9e-7 * (np.asarray(x) - 1024) - 5.19e-5 * (np.asarray(y) - 2306)
        r2 = fx**2 + fy**2
        return (fx * (1 - 0.012 * r2 + 0.05 * r2**2) + 2e-4 * fx * fy,
                fy * (1 - 0.011 * r2 + 0.05 * r2**2) + 0.05 * fx**3 * fy**2)
    return func


def zp_mag(k: int):
    """Order-4 Chebyshev-like magnitude field (mag model)."""
    return lambda x, y: (30.1 + 0.02 * k + 3e-3 * (np.asarray(x) / 1000) - 2e-3 * (np.asarray(y) / 2000) ** 2
                         + 5e-4 * (np.asarray(x) / 1000) ** 3 * (np.asarray(y) / 4000))


def njy_zp(x, y):
    """A flux model: linear in nJy per count, so its zp_mag is not a polynomial."""
    return 31.4 - 2.5 * np.log10(3.2 + 2e-4 * np.asarray(x) - 1e-4 * np.asarray(y))


@pytest.fixture(scope="module")
def calibration() -> Calibration:
    visits, detectors = zip(*KEYS)
    return Calibration.from_callables(
        (visits, detectors, np.tile(BBOX, (3, 1))),
        astrometry=([pixel_to_tangent(k) for k in range(3)], [TANGENT] * 3, 5),
        photometry=([zp_mag(k) for k in range(3)], 4), metadata={"band": "r"})


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(42)
    return rng.uniform(BBOX[0], BBOX[2], 2000), rng.uniform(BBOX[1], BBOX[3], 2000)


def test_json_round_trip_reproduces_the_models(calibration, points, tmp_path):
    calibration.to_json(tmp_path)                         # a folder gets calibration.json
    loaded = load_calibration(tmp_path)
    assert loaded.keys() == KEYS and loaded.metadata == {"band": "r"}
    x, y = points
    for k, key in enumerate(KEYS):
        xi, eta = loaded.tangent_plane(*key, x, y)
        xi0, eta0 = pixel_to_tangent(k)(x, y)
        assert np.max(np.abs(xi - xi0)) * 3.6e6 < 1e-6 and np.max(np.abs(eta - eta0)) * 3.6e6 < 1e-6
        ra, dec = loaded.sky(*key, x, y)
        sep_mas = angular_separation_arcsec(ra, dec, *tangent_to_sky(xi0, eta0, *TANGENT)) * 1e3
        assert np.max(sep_mas) < 1e-6
        assert np.max(np.abs(loaded.zp_mag(*key, x, y) - zp_mag(k)(x, y))) < 1e-9
        # the same doubles come back from the file
        for attr in ("astrometry", "photometry"):
            np.testing.assert_array_equal(getattr(loaded.ccd(*key), attr).coefficients,
                                          getattr(calibration.ccd(*key), attr).coefficients)


def test_magnitude_and_flux_follow_the_conventions(calibration):
    x, y, flux = np.array([0.0, 1000.0]), np.array([0.0, 4000.0]), np.array([1000.0, 250.0])
    zp = calibration.zp_mag(850587, 12, x, y)
    np.testing.assert_allclose(calibration.magnitude(850587, 12, x, y, flux), zp - 2.5 * np.log10(flux), atol=1e-12)
    njy = calibration.flux_njy(850587, 12, x, y, flux)
    np.testing.assert_allclose(31.4 - 2.5 * np.log10(njy), calibration.magnitude(850587, 12, x, y, flux), atol=1e-12)
    assert np.isnan(calibration.magnitude(850587, 12, x[:1], y[:1], np.array([-5.0]))[0])


def test_schema_is_documented_shape(calibration, tmp_path):
    doc = json.loads(calibration.to_json(tmp_path / "c.json").read_text())
    assert doc["schema"] == "jointcal.calibration" and doc["version"] == 1
    ccd = doc["ccds"][0]
    assert ccd["visit"] == 849375 and ccd["bbox"] == list(BBOX)
    assert ccd["astrometry"]["order"] == 5 and len(ccd["astrometry"]["terms"]) == 21
    assert ccd["astrometry"]["tangent_point_deg"] == list(TANGENT)
    assert ccd["photometry"]["space"] == "mag" and len(ccd["photometry"]["coefficients"]) == 15


def test_flux_space_photometry_is_exact(tmp_path, points):
    cal = Calibration.from_callables(([1], [2], [BBOX]), photometry=([njy_zp], 1, "flux"))
    loaded = load_calibration(cal.to_json(tmp_path / "c.json"))
    x, y = points
    assert np.max(np.abs(loaded.zp_mag(1, 2, x, y) - njy_zp(x, y))) < 1e-9
    with pytest.raises(InputError, match="no astrometry"):
        loaded.sky(1, 2, x, y)


def test_wrong_order_is_refused_naming_the_ccd():
    with pytest.raises(InputError, match=r"visit 849375, detector 12: pixel_to_tangent is not a polynomial of order 4"):
        Calibration.from_callables(([849375], [12], [BBOX]), astrometry=([pixel_to_tangent(0)], [TANGENT], 4))
    with pytest.raises(InputError, match="not a polynomial of order 3 in mag space"):
        Calibration.from_callables(([1], [2], [BBOX]), photometry=([njy_zp], 3))


def test_unknown_ccd_and_bad_files(calibration, tmp_path):
    with pytest.raises(InputError, match="visit 1, detector 99: no such CCD"):
        calibration.zp_mag(1, 99, [0.0], [0.0])
    with pytest.raises(InputError, match="not found"):
        load_calibration(tmp_path / "missing")
    (tmp_path / "calibration.json").write_text(json.dumps({"schema": "jointcal.calibration", "version": 99}))
    with pytest.raises(InputError, match="version 99 is not supported"):
        load_calibration(tmp_path)
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(InputError, match="not a jointcal calibration"):
        load_calibration(tmp_path / "other.json")


def test_chebyshev_field_recovers_a_hand_computed_series():
    # f = 2 + 3 T1(u) T1(v) - 0.5 T2(v) with T1(t) = t, T2(t) = 2 t^2 - 1
    def f(x, y):
        u, v = 2 * (x - 0) / 10 - 1, 2 * (y - 0) / 20 - 1
        return 2 + 3 * u * v - 0.5 * (2 * v**2 - 1)
    field = ChebyshevField.fit(f, (0.0, 0.0, 10.0, 20.0), 2)
    coef = dict(zip(field.terms, field.coefficients[:, 0]))
    assert coef[(0, 0)] == pytest.approx(2) and coef[(1, 1)] == pytest.approx(3) and coef[(0, 2)] == pytest.approx(-0.5)
    assert max(abs(c) for t, c in coef.items() if t not in {(0, 0), (1, 1), (0, 2)}) < 1e-13
    assert field(np.array([10.0]), np.array([20.0]))[0, 0] == pytest.approx(4.5)


def test_calibration_feeds_the_wcs_exporter(calibration):
    sky = functools.partial(calibration.sky, 850587, 12)
    _, report = fit_tan_sip(sky, BBOX, TANGENT, rms_mas=0.01, max_mas=0.03)
    assert report.order == 5 and report.max_mas < 0.01


def test_from_batch_matches_per_ccd_callables(calibration):
    """One callable over many CCDs (ccd row per pixel) gives the per-CCD fits to rounding."""
    visits, detectors = zip(*KEYS)

    def tangent(k, x, y):
        out = np.empty((2, np.size(x)))
        for c in np.unique(k):
            sel = k == c
            out[:, sel] = pixel_to_tangent(int(c))(x[sel], y[sel])
        return out

    def zp(k, x, y):
        return np.concatenate([zp_mag(int(c))(x[k == c], y[k == c]) for c in np.unique(k)])[np.argsort(
            np.argsort(k, kind="stable"), kind="stable")]

    batch = Calibration.from_batch((visits, detectors, np.tile(BBOX, (3, 1))), astrometry=(tangent, [TANGENT] * 3, 5),
                                   photometry=(zp, 4), metadata={"band": "r"}, chunk=2)
    assert batch.keys() == calibration.keys()
    for key in KEYS:
        a, b = batch.ccd(*key), calibration.ccd(*key)
        assert a.tangent_point_deg == b.tangent_point_deg and a.astrometry.terms == b.astrometry.terms
        np.testing.assert_allclose(a.astrometry.coefficients, b.astrometry.coefficients, rtol=0, atol=1e-15)
        np.testing.assert_allclose(a.photometry.coefficients, b.photometry.coefficients, rtol=0, atol=1e-12)
    with pytest.raises(InputError, match="not a polynomial of order 4"):
        Calibration.from_batch(([849375], [12], [BBOX]), astrometry=(tangent, [TANGENT], 4))


def test_json_text_is_that_of_the_json_module(calibration, tmp_path):
    from jointcal_core.calibration import json_default
    from jointcal_core.json_text import dumps_indented

    path = calibration.to_json(tmp_path / "c.json")
    assert path.read_text() == json.dumps(calibration.to_dict(), indent=1, default=json_default) + "\n"
    doc = {"a": [1.5, float("nan"), -float("inf"), np.float64(2.5)], "b": {"t": [[0, 1], [2, 3]], "e": [], "m": [[1], [2, "x"]]},
           "c": 'é"\n', "d": True, "e": None, "f": np.int64(3), "g": np.arange(3.0), "h": (1, 2.0, "s"), 3: {}, None: [False]}
    for indent in (1, 2, 4):
        assert dumps_indented(doc, indent, json_default) == json.dumps(doc, indent=indent, default=json_default)
