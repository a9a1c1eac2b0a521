"""Property-based tests (hypothesis): readers, selection and association invariants.

* Readers: random tables (valid and invalid: missing columns, NaN/inf, zero rows, constant columns)
  written as parquet / ECSV / FITS either round-trip through ``read_plain_catalogs`` /
  ``read_gaia_like`` or raise InputError, never another exception.
* Selection: the per-cut counts add up, per ccdImage and in total, and the keep mask is the AND of
  each cut evaluated independently from its documented definition.
* Association: on the seeded simulated field with random radius, selection and minMeasurements, at
  most one measurement per star per visit, star indices contiguous, counts and index maps consistent,
  and every associated measurement within associationRadius of its star's mean position on the
  tangent plane.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from astropy.table import Table
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import badinput_cases as bc
from jointcal_core.association import associate
from jointcal_core.config import JointcalConfig
from jointcal_core.exceptions import InputError
from jointcal_core.io.plain import read_plain_catalogs
from jointcal_core.io.refcat import read_gaia_like
from jointcal_core.pipeline import _take_ccds
from jointcal_core.projection import sky_to_tangent
from jointcal_core.selection import CUT_NAMES, select_sources

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FORMATS = {"parquet": ".parquet", "ecsv": ".ecsv", "fits": ".fits"}
SPECIAL = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -1.0, 1e30])


def _small_field():
    field = bc.simulated().field
    field, _ = _take_ccds(field, np.isin(field.ccd_images.detector, bc.SIM_DETECTORS))
    return field


FIELD = _small_field()


def _write(table: Table, path):
    fmt = {".parquet": "parquet", ".ecsv": "ascii.ecsv", ".fits": "fits"}[path.suffix]
    table.write(path, format=fmt, overwrite=True)


@st.composite
def source_tables(draw):
    """(table, valid): a plain source table, sometimes broken."""
    n = draw(st.integers(0, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x, y = rng.uniform(0, 2000, n), rng.uniform(0, 4000, n)
    wcs = FIELD.ccd_images.wcs[0]
    ra, dec = wcs.all_pix2world(x, y, 0)
    flux = rng.uniform(1e3, 1e5, n)
    cols = {"x": x, "y": y, "flux": flux, "flux_err": np.sqrt(flux), "ra": ra, "dec": dec}
    drop = draw(st.sets(st.sampled_from(sorted(cols)), max_size=2))
    spoil = draw(st.lists(st.tuples(st.sampled_from(sorted(cols)), SPECIAL), max_size=3))
    constant = draw(st.booleans()) and n > 0
    for name, value in spoil:
        if n:
            cols[name][rng.integers(0, n)] = value
    if constant:
        cols["x"][:] = 100.0
    valid = n >= 3 and not drop and not spoil and not constant
    return Table({k: v for k, v in cols.items() if k not in drop}), valid


@SETTINGS
@given(case=source_tables(), fmt=st.sampled_from(sorted(FORMATS)))
def test_plain_reader_round_trips_or_raises_input_error(tmp_path, case, fmt):
    table, valid = case
    path = tmp_path / f"exp-{len(table)}{FORMATS[fmt]}"
    _write(table, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ccds, meas = read_plain_catalogs([path])
    except InputError as exc:
        assert not valid, exc
        assert str(path) in str(exc)
        return
    assert len(meas) == len(table) and len(ccds) == 1
    if valid:
        np.testing.assert_allclose(meas.x, table["x"])
        np.testing.assert_allclose(meas.flux, table["flux"])
        ra, dec = ccds.wcs[0].all_pix2world(meas.x, meas.y, 0)
        assert np.max(np.abs(ra - table["ra"]) * 3600 * np.cos(np.radians(dec))) < 0.5   # TAN (+SIP from 30 points) fit to a TAN-SIP


@st.composite
def reference_tables(draw):
    n = draw(st.integers(0, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    cols = {"ra": rng.uniform(150, 151, n), "dec": rng.uniform(2, 3, n), "ra_error": rng.uniform(0.1, 1, n),
            "dec_error": rng.uniform(0.1, 1, n), "r_mag": rng.uniform(15, 21, n), "ref_epoch": np.full(n, 2016.0)}
    drop = draw(st.sets(st.sampled_from(sorted(cols)), max_size=2))
    for name, value in draw(st.lists(st.tuples(st.sampled_from(sorted(cols)), SPECIAL), max_size=3)):
        if n:
            cols[name][rng.integers(0, n)] = value
    return Table({k: v for k, v in cols.items() if k not in drop}), n > 0 and not ({"ra", "dec"} & drop)


@SETTINGS
@given(case=reference_tables(), fmt=st.sampled_from(sorted(FORMATS)))
def test_reference_reader_round_trips_or_raises_input_error(tmp_path, case, fmt):
    table, readable = case
    path = tmp_path / f"ref{FORMATS[fmt]}"
    _write(table, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = read_gaia_like(path)
    except InputError as exc:
        assert not readable, exc
        return
    assert readable and len(ref) == len(table)
    np.testing.assert_array_equal(ref.ra_deg, np.asarray(table["ra"], float))


# --- selection ------------------------------------------------------------------------------------------

@st.composite
def spoiled_fields(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    m = FIELD.measurements
    n = len(m)
    cols = {k: np.array(getattr(m, k), dtype=float) for k in ("x", "y", "flux", "flux_err", "var_x", "var_y", "cov_xy")}
    for name in draw(st.lists(st.sampled_from(sorted(cols)), max_size=6)):
        rows = rng.integers(0, n, draw(st.integers(1, 50)))
        cols[name][rows] = draw(SPECIAL) if draw(st.booleans()) else cols[name][rows] * rng.uniform(-3, 3, rows.size)
    flags = rng.integers(0, 512, n) * (rng.uniform(size=n) < draw(st.floats(0, 1)))
    meas = dataclasses.replace(m, **cols, flags=flags.astype(np.int64))
    config = JointcalConfig(minSnr=draw(st.floats(0, 200)), flagMask=draw(st.integers(0, 511)),
                            maxPositionErrorPix=draw(st.floats(0.001, 5)))
    return dataclasses.replace(FIELD, measurements=meas), config


def _cut(name, m, bbox, config):
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return {
            "finite": np.all([np.isfinite(getattr(m, k)) for k in ("x", "y", "flux", "flux_err", "var_x", "var_y",
                                                                    "cov_xy")], axis=0),
            "positive_errors": (m.var_x > 0) & (m.var_y > 0) & (m.flux_err > 0),
            "positive_definite_covariance": m.var_x * m.var_y - m.cov_xy ** 2 > 0,
            "min_snr": m.flux / m.flux_err >= config.minSnr,
            "flags": (m.flags & config.flagMask) == 0,
            "max_position_error": np.sqrt(np.maximum(m.var_x, m.var_y)) <= config.maxPositionErrorPix,
            "inside_bbox": (m.x >= bbox[:, 0]) & (m.x <= bbox[:, 2]) & (m.y >= bbox[:, 1]) & (m.y <= bbox[:, 3]),
        }[name]


@SETTINGS
@given(case=spoiled_fields())
def test_selection_counts_add_up_and_keep_is_every_cut(case):
    field, config = case
    sel = select_sources(field, config)
    m = field.measurements
    assert list(sel.removed) == list(CUT_NAMES)
    assert sum(sel.removed.values()) + sel.n_kept == sel.n_input == len(m)
    np.testing.assert_array_equal(sel.removed_per_ccd.sum(axis=1), list(sel.removed.values()))
    np.testing.assert_array_equal(sel.n_input_per_ccd - sel.removed_per_ccd.sum(axis=0), sel.n_kept_per_ccd)
    np.testing.assert_array_equal(np.bincount(m.ccd[sel.keep], minlength=len(field.ccd_images)), sel.n_kept_per_ccd)
    bbox = field.ccd_images.bbox[m.ccd]
    alive = np.ones(len(m), bool)
    for name in CUT_NAMES:
        passed = _cut(name, m, bbox, config)
        assert sel.removed[name] == np.count_nonzero(alive & ~passed), name
        alive &= passed
    np.testing.assert_array_equal(sel.keep, alive)


# --- association ----------------------------------------------------------------------------------------

@SETTINGS
@given(radius=st.floats(0.2, 6.0), min_meas=st.integers(1, 3), keep_fraction=st.floats(0.3, 1.0),
       seed=st.integers(0, 2**32 - 1), with_reference=st.booleans())
def test_association_invariants(radius, min_meas, keep_fraction, seed, with_reference):
    field = FIELD if with_reference else dataclasses.replace(FIELD, reference=None, photometry_reference=None)
    keep = np.random.default_rng(seed).uniform(size=len(field.measurements)) < keep_fraction
    config = JointcalConfig(associationRadius=radius, minMeasurements=min_meas)
    a = associate(field, keep, config)
    star = a.star
    assert np.all(star[~keep] == -1)
    on = star >= 0
    # contiguous star indices, every star measured, counts and index maps consistent
    np.testing.assert_array_equal(np.unique(star[on]), np.arange(a.n_stars))
    np.testing.assert_array_equal(np.bincount(star[on], minlength=a.n_stars), a.star_n_measurements)
    assert a.star_meas_ptr[-1] == a.star_meas_index.size == np.count_nonzero(on)
    for s in np.random.default_rng(seed).integers(0, max(a.n_stars, 1), min(a.n_stars, 20)):
        assert np.all(star[a.measurements_of(s)] == s)
    # at most one measurement per star per visit
    visit = field.ccd_images.visit[field.measurements.ccd[on]]
    pairs = np.unique(np.column_stack([star[on], visit]), axis=0)
    assert pairs.shape[0] == np.count_nonzero(on)
    # minMeasurements unless matched to a reference star
    assert np.all((a.star_n_measurements >= min_meas) | (a.star_ref >= 0))
    # each measurement joined its star within associationRadius of the star's running mean
    # (association.py); every later measurement j moves that mean by at most radius / j, so the
    # final mean is within radius x H_n (harmonic number of the star's n measurements) of it.
    # (Found by hypothesis: radius 0.25", a measurement 0.28" from its star's final mean.)
    mx, my = sky_to_tangent(a.meas_ra_deg[on], a.meas_dec_deg[on], *a.field_center_deg)
    sx, sy = sky_to_tangent(a.star_ra_deg, a.star_dec_deg, *a.field_center_deg)
    dist_arcsec = np.hypot(mx - sx[star[on]], my - sy[star[on]]) * 3600
    harmonic = np.cumsum(1.0 / np.arange(1, max(int(a.star_n_measurements.max(initial=1)), 1) + 1))
    bound = radius * harmonic[a.star_n_measurements[star[on]] - 1]
    assert np.all(dist_arcsec <= bound * (1 + 1e-6)), (dist_arcsec - bound).max()
