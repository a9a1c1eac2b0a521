"""Association: hand-built cases with known answers, and completeness/purity on a simulated field."""

import warnings

import numpy as np
import pytest
from astropy.wcs import WCS

from jointcal_core.association import (associate, connected_components, overlap_graph,
                                       pair_completeness_purity)
from jointcal_core.config import JointcalConfig
from jointcal_core.data import MJD_J2000, CcdImages, Field, Measurements, ReferenceCatalog
from jointcal_core.projection import angular_separation_arcsec, tangent_to_sky

RA0, DEC0 = 150.0, 2.0
SCALE_ARCSEC = 0.2           # pixel scale
NPIX = 2000                  # CCDs are 400 x 400 arcsec


def _wcs(center_offset_arcsec=(0.0, 0.0)) -> WCS:
    """TAN WCS of a NPIX x NPIX CCD centred at (RA0, DEC0) + offset (east, north; arcsec)."""
    ra, dec = tangent_to_sky(center_offset_arcsec[0] / 3600, center_offset_arcsec[1] / 3600, RA0, DEC0)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [float(ra), float(dec)]
    w.wcs.crpix = [NPIX / 2 + 0.5, NPIX / 2 + 0.5]
    s = SCALE_ARCSEC / 3600
    w.wcs.cd = [[-s, 0.0], [0.0, s]]
    return w


def _field(ccds: list[tuple], detections: list[tuple], reference: ReferenceCatalog | None = None) -> Field:
    """ccds: (visit, detector, centre offset arcsec, mjd); detections: (ccd row, east, north arcsec, flux)."""
    wcs = [_wcs(c[2]) for c in ccds]
    n = len(ccds)
    images = CcdImages.build(visit=[c[0] for c in ccds], detector=[c[1] for c in ccds], wcs=wcs,
                             bbox=np.tile([-0.5, -0.5, NPIX - 0.5, NPIX - 0.5], (n, 1)),
                             zp_mag=np.full(n, 30.0), mjd=[c[3] for c in ccds])
    ccd = np.array([d[0] for d in detections])
    ra, dec = tangent_to_sky(np.array([d[1] for d in detections]) / 3600,
                             np.array([d[2] for d in detections]) / 3600, RA0, DEC0)
    x, y = np.empty(ccd.size), np.empty(ccd.size)
    for i in range(n):
        on = ccd == i
        if on.any():
            x[on], y[on] = wcs[i].all_world2pix(ra[on], dec[on], 0)
    flux = np.array([d[3] if len(d) > 3 else 1e4 for d in detections], float)
    meas = Measurements.build(ccd=ccd, x=x, y=y, var_x=np.full(ccd.size, 0.01), var_y=np.full(ccd.size, 0.01),
                              flux=flux, flux_err=flux / 100)
    return Field(ccd_images=images, measurements=meas, reference=reference)


def _ref(offsets_arcsec, **kwargs) -> ReferenceCatalog:
    east, north = np.array(offsets_arcsec, float).T
    ra, dec = tangent_to_sky(east / 3600, north / 3600, RA0, DEC0)
    return ReferenceCatalog.build(ra_deg=ra, dec_deg=dec, **kwargs)


TWO_VISITS = [(1, 0, (0, 0), 60000.0), (2, 0, (5, -3), 60001.0)]
CONFIG = dict(associationRadius=2.0, matchCut=3.0, minMeasurements=2)


def test_two_visits_known_pairs_and_a_decoy_at_one_and_a_half_radii():
    dets = [(0, 0, 0), (0, 50, 0), (0, 0, 50),              # visit 1: A, B, C
            (1, 0.3, 0), (1, 49.8, 0.1), (1, 3.0, 50)]      # visit 2: A, B, and a decoy 3" (1.5 radii) from C
    assoc = associate(_field(TWO_VISITS, dets), None, JointcalConfig(**CONFIG))
    assert assoc.n_stars == 2
    s = assoc.star
    assert s[0] == s[3] >= 0 and s[1] == s[4] >= 0 and s[0] != s[1]
    assert s[2] == -1 and s[5] == -1                          # C and the decoy: one measurement each, dropped
    assert assoc.star_n_measurements.tolist() == [2, 2]
    # mean position of A is (0.15, 0) arcsec east of the centre
    a = s[0]
    ra, dec = tangent_to_sky(0.15 / 3600, 0.0, RA0, DEC0)
    assert angular_separation_arcsec(assoc.star_ra_deg[a], assoc.star_dec_deg[a], ra, dec) < 1e-3
    # with minMeasurements 1 the decoy is its own star, not C's
    loose = associate(_field(TWO_VISITS, dets), None, JointcalConfig(**dict(CONFIG, minMeasurements=1)))
    assert loose.n_stars == 4 and loose.star[2] != loose.star[5] and min(loose.star) >= 0


def test_double_detection_in_one_visit_closest_wins():
    visits = TWO_VISITS + [(3, 0, (0, 0), 60002.0)]
    dets = [(0, 0, 0), (1, 0.1, 0), (1, 0.8, 0), (2, 0.05, 0)]
    assoc = associate(_field(visits, dets), None, JointcalConfig(**CONFIG))
    assert assoc.n_stars == 1
    assert assoc.star.tolist() == [0, 0, -1, 0]               # the farther twin started a singleton, dropped
    assert assoc.star_n_measurements.tolist() == [3]


def test_overlapping_ccds_of_one_visit_give_one_measurement():
    # visit 1 has two CCDs overlapping by 100 arcsec; star A lies in the overlap, nearer CCD 1's centre
    ccds = [(1, 0, (0, 0), 60000.0), (1, 1, (300, 0), 60000.0), (2, 0, (150, 0), 60001.0)]
    dets = [(0, 160, 0), (1, 160, 0.1), (2, 160.2, 0), (0, 0, 0), (2, 0.2, 0)]
    assoc = associate(_field(ccds, dets), None, JointcalConfig(**CONFIG))
    assert assoc.n_duplicates == 1
    assert assoc.star[0] == -1                                # 160" from CCD 0's centre vs 140" from CCD 1's
    assert assoc.star[1] == assoc.star[2] >= 0
    assert assoc.star[3] == assoc.star[4] >= 0
    assert sorted(assoc.star_n_measurements.tolist()) == [2, 2]


def test_a_shifted_ccd_is_recentred_before_matching():
    # visit 2's WCS is 1.5" off to the east; 10 pairs of stars 2" apart east-west would be
    # cross-matched (the west star's detection lands 0.5" from the east star) without the
    # per-CCD offset measured from the isolated stars
    rng = np.random.default_rng(3)
    isolated = np.column_stack([rng.permutation(np.arange(-150, 150, 3.0))[:80],
                                rng.permutation(np.arange(-150, 150, 3.0))[:80] + 0.5])
    west = np.column_stack([np.full(10, 170.0), np.arange(-150, 150, 30.0)])
    stars = np.concatenate([isolated, west, west + [2.0, 0.0]])
    dets = [(0, e, n) for e, n in stars] + [(1, e + 1.5, n) for e, n in stars]
    assoc = associate(_field(TWO_VISITS, dets), None, JointcalConfig(**CONFIG))
    n = len(stars)
    assert assoc.n_stars == n
    assert np.array_equal(assoc.star[:n], assoc.star[n:])


def test_reference_matching_is_one_to_one_closest_first():
    dets = [(0, 0, 0), (0, 40, 0), (0, 80, 0), (1, 0, 0), (1, 40, 0), (1, 80, 0)]
    ref = _ref([(1.0, 0), (0.5, 0), (41.0, 2.0), (84.0, 0), (1000.0, 0)])  # r4 is off the CCDs
    assoc = associate(_field(TWO_VISITS, dets, ref), None, JointcalConfig(**CONFIG))
    a, b, c = assoc.star[:3]
    assert assoc.star_ref[a] == 1                              # 0.5" beats 1.0"; r0 stays unmatched
    assert assoc.star_ref[b] == 2                              # 2.24" < matchCut
    assert assoc.star_ref[c] == -1                             # 4" > matchCut
    np.testing.assert_allclose(assoc.ref_separation_arcsec[[a, b]], [0.5, np.hypot(1, 2)], atol=1e-4)
    assert np.isnan(assoc.ref_separation_arcsec[c])
    assert assoc.collected_refStars == 4 and assoc.ref_collected.tolist() == [True] * 4 + [False]
    assert assoc.matched_fittedStars == 2


def test_reference_moved_to_the_field_epoch_with_its_proper_motion():
    ten_years = MJD_J2000 + 3652.5
    visits = [(1, 0, (0, 0), ten_years - 1), (2, 0, (5, -3), ten_years + 1)]
    dets = [(0, 10, 0), (1, 10, 0)]
    # 1 arcsec/yr east: 10 arcsec west of the detections at J2000
    moving = dict(ra_err_mas=5.0, dec_err_mas=5.0, pm_ra_masyr=[1000.0], pm_dec_masyr=[0.0], epoch_mjd=MJD_J2000)
    assoc = associate(_field(visits, dets, _ref([(0.0, 0.0)], **moving)), None, JointcalConfig(**CONFIG))
    assert assoc.epoch_mjd == pytest.approx(ten_years)
    assert assoc.star_ref.tolist() == [0]
    assert assoc.ref_separation_arcsec[0] < 0.01
    still = dict(moving, pm_ra_masyr=[0.0])
    assert associate(_field(visits, dets, _ref([(0.0, 0.0)], **still)), None,
                     JointcalConfig(**CONFIG)).star_ref.tolist() == [-1]


def test_min_measurements_keeps_reference_matched_stars_like_jointcal():
    visits = TWO_VISITS + [(3, 0, (0, 0), 60002.0)]
    dets = [(0, 0, 0), (1, 0, 0), (2, 0, 0),        # A: 3 measurements
            (0, 30, 0), (1, 30, 0),                  # B: 2
            (0, 60, 0)]                              # C: 1, but a reference star
    field = _field(visits, dets, _ref([(60.2, 0)]))
    assoc = associate(field, None, JointcalConfig(**dict(CONFIG, minMeasurements=3)))
    assert assoc.n_stars == 2
    assert assoc.star[3] == assoc.star[4] == -1
    assert assoc.star[5] >= 0 and assoc.star_ref[assoc.star[5]] == 0
    assert sorted(assoc.star_n_measurements.tolist()) == [1, 3]


def test_unselected_measurements_are_not_associated():
    dets = [(0, 0, 0), (0, 50, 0), (1, 0, 0), (1, 50, 0)]
    keep = np.array([True, False, True, True])
    assoc = associate(_field(TWO_VISITS, dets), keep, JointcalConfig(**CONFIG))
    assert assoc.star.tolist() == [0, -1, 0, -1]
    assert np.isnan(assoc.meas_ra_deg[1]) and np.isfinite(assoc.meas_ra_deg[3])


def test_index_maps_counts_and_mean_magnitude():
    dets = [(0, 0, 0, 1e4), (0, 50, 0), (1, 0, 0, 1e5), (1, 50, 0)]
    assoc = associate(_field(TWO_VISITS, dets), None, JointcalConfig(**CONFIG))
    for s in range(assoc.n_stars):
        rows = assoc.measurements_of(s)
        assert np.all(assoc.star[rows] == s) and rows.size == assoc.star_n_measurements[s]
    assert assoc.ccd_n_associated.tolist() == [2, 2] and assoc.visit_n_associated.tolist() == [2, 2]
    assert assoc.visit.tolist() == [1, 2]
    # zp 30, fluxes 1e4 and 1e5 with equal S/N: weighted mean of mags 20 and 17.5 (equal weights)
    assert assoc.star_mag[assoc.star[0]] == pytest.approx(18.75)
    summary = assoc.summary()
    assert summary["n_stars"] == 2 and summary["n_associated_measurements"] == 4


def test_reserved_fraction_is_seeded():
    rng = np.random.default_rng(5)
    pos = rng.uniform(-180, 180, (500, 2))
    dets = [(k, e, n) for k in (0, 1) for e, n in pos]
    field = _field(TWO_VISITS, dets)
    base = dict(CONFIG, reservedFraction=0.2)
    a = associate(field, None, JointcalConfig(**base, seed=1))
    b = associate(field, None, JointcalConfig(**base, seed=1))
    c = associate(field, None, JointcalConfig(**base, seed=2))
    assert a.n_stars == 500
    assert np.count_nonzero(a.star_reserved) == 100
    assert np.array_equal(a.star_reserved, b.star_reserved)
    assert not np.array_equal(a.star_reserved, c.star_reserved)
    assert not associate(field, None, JointcalConfig(**CONFIG)).star_reserved.any()


def test_overlap_graph_and_components():
    # visits 1, 2 share stars; visits 3, 4 share others 1000" away; no star links the two pairs
    far = (1000, 0)
    visits = [(1, 0, (0, 0), 6e4), (2, 0, (0, 0), 6e4 + 1), (3, 0, far, 6e4 + 2), (4, 0, far, 6e4 + 3)]
    dets = [(v, 10 * k, 0) for v in (0, 1) for k in range(3)] + [(v, 1000 + 10 * k, 0) for v in (2, 3) for k in range(2)]
    field = _field(visits, dets)
    assoc = associate(field, None, JointcalConfig(**CONFIG))
    graph = overlap_graph(assoc, field)
    assert graph.tolist() == [[3, 3, 0, 0], [3, 3, 0, 0], [0, 0, 2, 2], [0, 0, 2, 2]]
    n, labels = connected_components(graph)
    assert n == 2 and labels[0] == labels[1] != labels[2] == labels[3]
    assert connected_components(graph, min_shared=3)[0] == 3


def test_pair_scores_by_hand():
    true = np.array([0, 0, 0, 1, 1])
    visit = np.array([1, 2, 3, 1, 2])
    assert pair_completeness_purity(np.array([0, 0, 0, 1, 1]), true, visit) == (1.0, 1.0)
    # 4 true pairs (3 of star 0, 1 of star 1); associated pairs (0,1) right and (2,3) wrong
    c, p = pair_completeness_purity(np.array([0, 0, 1, 1, -1]), true, visit)
    assert c == pytest.approx(1 / 4) and p == pytest.approx(1 / 2)


def test_completeness_and_purity_on_a_simulated_megacam_field():
    simulate = pytest.importorskip("jointcal_core.simulate")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = simulate.simulate_field(camera="megacam", n_visits=10, n_stars=20000, seed=11)
    field, truth = sim.field, sim.truth
    assert len(field.ccd_images) == 360
    from jointcal_core.selection import select_sources

    config = JointcalConfig()
    keep = select_sources(field, config).keep
    assoc = associate(field, keep, config)
    visit = field.ccd_images.visit[field.measurements.ccd]
    completeness, purity = pair_completeness_purity(assoc.star, np.where(keep, truth.meas_star, -1), visit)
    assert completeness >= 0.995 and purity >= 0.995
    # reference matches point at the right star: the majority true star of the fitted star
    matched = np.flatnonzero(assoc.star_ref >= 0)
    first_meas = assoc.star_meas_index[assoc.star_meas_ptr[matched]]
    right = truth.ref_star[assoc.star_ref[matched]] == truth.meas_star[first_meas]
    assert right.mean() >= 0.995
    assert assoc.matched_fittedStars >= 0.99 * np.count_nonzero(assoc.ref_collected)   # on a CCD
    assert connected_components(overlap_graph(assoc, field))[0] == 1
