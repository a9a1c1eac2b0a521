"""Source selection: each cut removes what it should, in order, counted per cut and per ccdImage."""

import numpy as np
from astropy.wcs import WCS

from jointcal_core.config import JointcalConfig
from jointcal_core.data import CcdImages, Field, Measurements
from jointcal_core.selection import CUT_NAMES, select_sources


def _field(rows: list[dict], n_ccd: int = 2) -> Field:
    """ccdImages 0..n_ccd-1 of 100 x 200 px; one measurement per dict (defaults: a good source)."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval, w.wcs.crpix, w.wcs.cd = [10.0, 0.0], [50.5, 100.5], [[-5e-5, 0], [0, 5e-5]]
    ccds = CcdImages.build(visit=np.arange(n_ccd), detector=np.zeros(n_ccd), wcs=[w] * n_ccd,
                           bbox=np.tile([-0.5, -0.5, 99.5, 199.5], (n_ccd, 1)))
    good = dict(ccd=0, x=50.0, y=100.0, var_x=0.01, var_y=0.01, cov_xy=0.0, flux=1000.0, flux_err=10.0, flags=0)
    cols = {k: [dict(good, **r)[k] for r in rows] for k in good}
    return Field(ccd_images=ccds, measurements=Measurements.build(**cols))


# one row per cut, each failing only that cut (minSnr 10, flagMask 0b11111100, maxPositionErrorPix 1)
ONE_FAILURE_EACH = [
    dict(x=np.nan),                                   # finite
    dict(flux_err=0.0),                               # positive_errors
    dict(var_x=0.01, var_y=0.01, cov_xy=0.02),        # positive_definite_covariance
    dict(flux=50.0),                                  # min_snr (S/N 5)
    dict(flags=4),                                    # flags
    dict(var_x=1.5, var_y=0.5, cov_xy=0.1),           # max_position_error (sqrt(1.5) > 1)
    dict(x=99.6),                                     # inside_bbox
]


def test_each_cut_removes_its_own_failure():
    rows = ONE_FAILURE_EACH + [dict(), dict(flags=3), dict(x=99.5, y=-0.5), dict(flux=100.0)]
    sel = select_sources(_field(rows), JointcalConfig())
    assert list(sel.removed) == list(CUT_NAMES)
    assert list(sel.removed.values()) == [1] * len(CUT_NAMES)
    # flags 1 and 2 pass the default mask; bbox edges are inclusive; S/N exactly 10 passes
    assert sel.keep.tolist() == [False] * len(CUT_NAMES) + [True, True, True, True]
    assert sel.n_kept == 4 and sel.n_input == 11


def test_a_measurement_is_counted_by_its_first_failed_cut_only():
    # fails finite, S/N and flags: counted once, under 'finite'; the second fails S/N and flags
    rows = [dict(y=np.inf, flux=1.0, flags=255), dict(flux=1.0, flags=255), dict(flux=-1000.0)]
    sel = select_sources(_field(rows), JointcalConfig())
    assert sel.removed["finite"] == 1
    assert sel.removed["min_snr"] == 2           # negative flux fails S/N
    assert sel.removed["flags"] == 0
    assert sum(sel.removed.values()) == 3


def test_per_ccd_counts():
    rows = [dict(ccd=0), dict(ccd=0, flux=1.0), dict(ccd=1, flux=1.0), dict(ccd=1, flags=128), dict(ccd=1)]
    sel = select_sources(_field(rows), JointcalConfig())
    k_snr, k_flags = CUT_NAMES.index("min_snr"), CUT_NAMES.index("flags")
    assert sel.removed_per_ccd.shape == (len(CUT_NAMES), 2)
    assert sel.removed_per_ccd[k_snr].tolist() == [1, 1]
    assert sel.removed_per_ccd[k_flags].tolist() == [0, 1]
    assert sel.n_input_per_ccd.tolist() == [2, 3]
    assert sel.n_kept_per_ccd.tolist() == [1, 1]
    assert np.array_equal(sel.removed_per_ccd.sum(axis=1), list(sel.removed.values()))


def test_config_thresholds_are_used():
    rows = [dict(flux=150.0), dict(flags=4), dict(var_x=4.0, var_y=4.0)]
    relaxed = JointcalConfig(minSnr=12, flagMask=0, maxPositionErrorPix=2.5)
    assert select_sources(_field(rows), relaxed).keep.tolist() == [True, True, True]
    strict = JointcalConfig(minSnr=16, flagMask=4, maxPositionErrorPix=1.9)
    assert select_sources(_field(rows), strict).keep.tolist() == [False, False, False]


def test_report_names_every_cut():
    sel = select_sources(_field(ONE_FAILURE_EACH + [dict()]), JointcalConfig())
    text = sel.report()
    for name in CUT_NAMES:
        assert name in text
    assert text.splitlines()[-1].split()[:2] == ["kept", "1"]
    assert sel.report_line().startswith("kept 1 of 8; removed by finite 1,")


def test_empty_field():
    field = _field([dict()]).select_visits([])
    sel = select_sources(field, JointcalConfig())
    assert sel.n_input == 0 and sel.n_kept == 0 and sel.removed_per_ccd.shape == (len(CUT_NAMES), 0)
