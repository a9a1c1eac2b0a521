"""Proper motion and parallax against astropy (ERFA pmsafe and astropy's Earth ephemeris)."""

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import Distance, SkyCoord, get_body_barycentric
from astropy.time import Time

from jointcal_core.data import ReferenceCatalog
from jointcal_core.motion import earth_barycentric_au, propagate_errors, propagate_reference
from jointcal_core.projection import angular_separation_arcsec

GAIA_DR3_EPOCH_MJD = 57388.5   # J2016.0
TEN_YEARS_LATER = GAIA_DR3_EPOCH_MJD + 3652.5


def _stars(seed, n=300, pm_sigma=20.0, pm_total=None):
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-0.98, 0.98, n)))
    if pm_total is None:
        pm_ra, pm_dec = rng.normal(0, pm_sigma, n), rng.normal(0, pm_sigma, n)
    else:
        phi = rng.uniform(0, 2 * np.pi, n)
        pm_ra, pm_dec = pm_total * np.cos(phi), pm_total * np.sin(phi)
    # physical space velocities (ERFA overrides the distance above ~0.5 c): fast movers are nearby
    plx = rng.uniform(0.5, 20.0, n) if pm_total is None else rng.uniform(20.0, 200.0, n)
    ref = ReferenceCatalog.build(ra_deg=ra, dec_deg=dec, pm_ra_masyr=pm_ra, pm_dec_masyr=pm_dec, parallax_mas=plx,
                                 epoch_mjd=GAIA_DR3_EPOCH_MJD)
    coord = SkyCoord(ra * u.deg, dec * u.deg, pm_ra_cosdec=pm_ra * u.mas / u.yr, pm_dec=pm_dec * u.mas / u.yr,
                     distance=Distance(parallax=plx * u.mas), obstime=Time(GAIA_DR3_EPOCH_MJD, format="mjd"))
    return ref, coord


def _astropy_geocentric(moved: SkyCoord, mjd: float) -> tuple[np.ndarray, np.ndarray]:
    """Direction of the moved star seen from the Earth's centre (no aberration): r_star - r_earth."""
    earth = get_body_barycentric("earth", Time(mjd, format="mjd"))
    geo = SkyCoord(moved.cartesian.without_differentials() - earth, frame="icrs", representation_type="cartesian")
    geo.representation_type = "spherical"
    return geo.ra.deg, geo.dec.deg


@pytest.mark.parametrize("pm_total, tol_mas", [(None, 0.1), (1000.0, 1.0)])
def test_proper_motion_matches_astropy_apply_space_motion(pm_total, tol_mas):
    ref, coord = _stars(1, pm_total=pm_total)
    moved = coord.apply_space_motion(Time(TEN_YEARS_LATER, format="mjd"))
    ra, dec = propagate_reference(ref, TEN_YEARS_LATER, parallax=False)
    sep_mas = angular_separation_arcsec(ra, dec, moved.ra.deg, moved.dec.deg) * 1e3
    assert sep_mas.max() < tol_mas
    # and the motion itself has the right size: 10 years of pm
    travelled = angular_separation_arcsec(ref.ra_deg, ref.dec_deg, ra, dec) * 1e3
    expected = 10 * np.hypot(ref.pm_ra_masyr, ref.pm_dec_masyr)
    np.testing.assert_allclose(travelled, expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("pm_total, tol_mas", [(None, 0.1), (1000.0, 1.0)])
def test_parallax_matches_astropy_earth_position(pm_total, tol_mas):
    ref, coord = _stars(2, pm_total=pm_total)
    for mjd in (TEN_YEARS_LATER, TEN_YEARS_LATER + 91.3, GAIA_DR3_EPOCH_MJD - 200.0):
        moved = coord.apply_space_motion(Time(mjd, format="mjd"))
        ra_ap, dec_ap = _astropy_geocentric(moved, mjd)
        ra, dec = propagate_reference(ref, mjd)
        assert (angular_separation_arcsec(ra, dec, ra_ap, dec_ap) * 1e3).max() < tol_mas


def test_parallax_size_and_sign_at_the_ecliptic_pole():
    # at the north ecliptic pole the Earth's ~1 AU orbit is perpendicular to the line of sight:
    # the star is displaced by ~plx, directly away from the Sun-Earth direction
    pole = SkyCoord(lon=0 * u.deg, lat=90 * u.deg, frame="barycentrictrueecliptic").icrs
    ref = ReferenceCatalog.build(ra_deg=[pole.ra.deg], dec_deg=[pole.dec.deg], parallax_mas=[100.0])
    mjd = 60000.0
    ra, dec = propagate_reference(ref, mjd)
    ra0, dec0 = propagate_reference(ref, mjd, parallax=False)
    shift_mas = angular_separation_arcsec(ra0, dec0, ra, dec)[0] * 1e3
    earth_au = np.linalg.norm(earth_barycentric_au(mjd))
    assert shift_mas == pytest.approx(100.0 * earth_au, rel=0.01)
    unit = lambda r, d: np.array([np.cos(np.radians(d)) * np.cos(np.radians(r)),
                                  np.cos(np.radians(d)) * np.sin(np.radians(r)), np.sin(np.radians(d))])
    displacement = (unit(ra[0], dec[0]) - unit(ra0[0], dec0[0])).ravel()
    assert np.dot(displacement, earth_barycentric_au(mjd)) < 0


def test_per_star_epochs_equal_scalar_calls():
    ref, _ = _stars(3, n=50)
    epochs = np.where(np.arange(50) % 2, 59000.0, 60500.0)
    ra, dec = propagate_reference(ref, epochs)
    for value in (59000.0, 60500.0):
        rows = epochs == value
        ra_s, dec_s = propagate_reference(ref, value)
        np.testing.assert_array_equal(ra[rows], ra_s[rows])
        np.testing.assert_array_equal(dec[rows], dec_s[rows])


def test_no_motion_returns_catalog_positions():
    ref = ReferenceCatalog.build(ra_deg=[359.9999, 0.0, 45.0], dec_deg=[-89.0, 0.0, 89.9])
    ra, dec = propagate_reference(ref, 62000.0)
    assert (angular_separation_arcsec(ra, dec, ref.ra_deg, ref.dec_deg) * 1e6).max() < 1.0  # < 1 micro-arcsec
    assert np.all((ra >= 0) & (ra < 360))


def test_propagate_errors_adds_motion_errors_in_quadrature():
    ref = ReferenceCatalog.build(ra_deg=[10.0, 10.0, 10.0], dec_deg=[20.0, 20.0, 20.0], ra_err_mas=[1.0, 1.0, np.nan],
                                 dec_err_mas=[2.0, 2.0, 2.0], pm_ra_err_masyr=[0.5, np.nan, 0.5],
                                 pm_dec_err_masyr=[0.1, np.nan, 0.1], epoch_mjd=GAIA_DR3_EPOCH_MJD)
    var_ra, var_dec = propagate_errors(ref, TEN_YEARS_LATER)
    np.testing.assert_allclose(var_ra[:2], [1.0 + 25.0, 1.0])
    np.testing.assert_allclose(var_dec, [4.0 + 1.0, 4.0, 4.0 + 1.0])
    assert np.isnan(var_ra[2])      # an unknown position error stays unknown


def test_propagate_errors_parallax_term_is_bounded_by_one_au():
    ref = ReferenceCatalog.build(ra_deg=[80.0], dec_deg=[-30.0], ra_err_mas=[0.0], dec_err_mas=[0.0],
                                 parallax_mas=[10.0], parallax_err_mas=[2.0])
    var_ra, var_dec = propagate_errors(ref, 60100.0)
    total = var_ra[0] + var_dec[0]
    assert 0 < total <= (2.0 * 1.02) ** 2
