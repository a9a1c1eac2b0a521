"""Camera layouts read from real files: MegaCam (SCAMP megacam.ahead) and HSC (LSST visitSummary)."""

import numpy as np
import pytest

from jointcal_core.camera import corner_residual_arcsec, hsc_camera, megacam_camera


def _corners(camera):
    b = camera.bbox
    xs = np.stack([b[:, 0], b[:, 2], b[:, 2], b[:, 0]], 1)
    ys = np.stack([b[:, 1], b[:, 1], b[:, 3], b[:, 3]], 1)
    m = camera.pixel_to_focal
    u = m[:, 0, 0, None] * xs + m[:, 0, 1, None] * ys + m[:, 0, 2, None]
    v = m[:, 1, 0, None] * xs + m[:, 1, 1, None] * ys + m[:, 1, 2, None]
    return u, v


def _assert_no_overlap(camera, n_per_axis=12):
    """Sample points inside every CCD (1 px from its edges); none may fall inside another CCD."""
    b = camera.bbox
    t = (np.arange(n_per_axis) + 0.5) / n_per_axis
    gx, gy = np.meshgrid(t, t)
    x = b[:, 0, None] + 1 + gx.ravel() * (b[:, 2, None] - b[:, 0, None] - 2)
    y = b[:, 1, None] + 1 + gy.ravel() * (b[:, 3, None] - b[:, 1, None] - 2)
    det = np.repeat(camera.detector, x.shape[1])
    u, v = camera.to_focal(det, x.ravel(), y.ravel())
    m = camera.pixel_to_focal
    inv = np.linalg.inv(m[:, :, :2])
    du, dv = u[None] - m[:, 0, 2, None], v[None] - m[:, 1, 2, None]
    px = inv[:, 0, 0, None] * du + inv[:, 0, 1, None] * dv
    py = inv[:, 1, 0, None] * du + inv[:, 1, 1, None] * dv
    inside = (px > b[:, 0, None]) & (px < b[:, 2, None]) & (py > b[:, 1, None]) & (py < b[:, 3, None])
    assert np.all(inside.sum(0) == 1)


def test_megacam_has_36_ccds_of_2112_by_4644():
    cam = megacam_camera()
    assert cam.name == "megacam" and cam.focal_unit == "deg"
    assert list(cam.detector) == list(range(36))
    assert np.all(cam.bbox == [-0.5, -0.5, 2111.5, 4643.5])


def test_megacam_plate_scale_and_extent():
    cam = megacam_camera()
    scale_arcsec = np.sqrt(np.abs(np.linalg.det(cam.pixel_to_focal[:, :, :2]))) * 3600
    assert np.all((scale_arcsec > 0.18) & (scale_arcsec < 0.19))       # MegaCam: 0.187"/px
    u, v = _corners(cam)
    assert 0.95 < np.ptp(u) < 1.05 and 0.95 < np.ptp(v) < 1.05        # ~1 deg square
    assert abs(u.mean()) < 0.01 and abs(v.mean()) < 0.01


def test_megacam_uses_one_based_crpix():
    """Detector 0's first block: CRPIX1 = -7544.414053; pixel CRPIX - 1 (0-based) maps to 0."""
    cam = megacam_camera()
    u, v = cam.to_focal(np.array([0]), np.array([-7544.414053 - 1]), np.array([9802.815674 - 1]))
    assert u[0] == pytest.approx(0, abs=1e-12) and v[0] == pytest.approx(0, abs=1e-12)


def test_megacam_ccds_do_not_overlap():
    _assert_no_overlap(megacam_camera())


def test_hsc_has_103_ccds_of_2048_by_4176():
    cam = hsc_camera()
    assert len(cam.detector) == 103 and 9 not in cam.detector and cam.detector.max() == 103
    assert np.all(cam.bbox == [-0.5, -0.5, 2047.5, 4175.5])


def test_hsc_extent_and_plate_scale():
    cam = hsc_camera()
    u, v = _corners(cam)
    radius = np.hypot(u, v)
    assert 0.7 < radius.max() < 0.9                                    # HSC: 1.5 deg diameter
    assert 1.4 < np.ptp(u) < 1.6 and 1.4 < np.ptp(v) < 1.7
    scale_arcsec = np.sqrt(np.abs(np.linalg.det(cam.pixel_to_focal[:, :, :2]))) * 3600
    assert np.all((scale_arcsec > 0.15) & (scale_arcsec < 0.175))      # 0.168"/px at the centre


def test_hsc_affine_fit_residual_is_the_nonlinear_distortion():
    res = corner_residual_arcsec()
    assert res.shape == (103, 4)
    assert res.max() < 2.5 and np.median(res) < 1.5                    # measured: max 1.9", median 1.1"


def test_hsc_ccds_do_not_overlap():
    _assert_no_overlap(hsc_camera())
