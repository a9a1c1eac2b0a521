"""jointcal_core/projection.py: moving tangent-plane positions between tangent points."""

import numpy as np
import pytest

from jointcal_core.projection import (change_tangent_point, sky_to_tangent, sky_to_tangent_jacobian, tangent_basis,
                                      tangent_to_sky)


@pytest.mark.parametrize("centre", [(150.1, 2.2), (10.0, 89.5), (359.9, -60.0)])
def test_change_of_tangent_point_equals_the_trip_through_the_sky(centre):
    """The homography gives what tangent_to_sky then sky_to_tangent give, positions and
    derivatives, for tangent points up to 1 degree apart (one near the pole, one across RA 0)."""
    rng = np.random.default_rng(7)
    n = 20_000
    xi, eta = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    other = np.column_stack([(centre[0] + rng.uniform(-1, 1, n)) % 360,
                             np.clip(centre[1] + rng.uniform(-1, 1, n), -89.9, 89.9)])
    ra, dec = tangent_to_sky(xi, eta, *centre)
    xi_b, eta_b = sky_to_tangent(ra, dec, other[:, 0], other[:, 1])
    rotation = tangent_basis(other[:, 0], other[:, 1]) @ tangent_basis(*centre).T
    xi_h, eta_h, jac = change_tangent_point(xi, eta, rotation, jacobian=True)
    assert np.max(np.abs(xi_h - xi_b)) * 3.6e6 < 1e-5          # mas
    assert np.max(np.abs(eta_h - eta_b)) * 3.6e6 < 1e-5
    # derivative: d(plane B)/d(sky) times the inverse of d(plane A)/d(sky)
    jb = sky_to_tangent_jacobian(ra, dec, other[:, 0], other[:, 1])
    expected = jb @ np.linalg.inv(sky_to_tangent_jacobian(ra, dec, *centre))
    np.testing.assert_allclose(jac, expected, rtol=0, atol=1e-12)


def test_change_of_tangent_point_derivative_matches_finite_differences():
    rotation = tangent_basis(30.5, 20.3) @ tangent_basis(30.0, 20.0).T
    xi, eta = np.array([0.2, -0.7]), np.array([-0.4, 0.9])
    _, _, jac = change_tangent_point(xi, eta, rotation, jacobian=True)
    h = 1e-6
    for j, (dx, dy) in enumerate(((h, 0), (0, h))):
        plus = np.column_stack(change_tangent_point(xi + dx, eta + dy, rotation)[:2])
        minus = np.column_stack(change_tangent_point(xi - dx, eta - dy, rotation)[:2])
        np.testing.assert_allclose(jac[:, :, j], (plus - minus) / (2 * h), atol=1e-8)


def test_points_more_than_a_quarter_turn_away_are_nan_as_in_sky_to_tangent():
    rotation = tangent_basis(0.0, 0.0) @ tangent_basis(90.0, 0.0).T
    # on the plane at RA 90: half a degree east (RA 90.5, beyond 90 degrees from RA 0) and west
    xi, eta, jac = change_tangent_point(np.array([0.5, -0.5]), np.array([0.0, 0.0]), rotation, jacobian=True)
    assert np.isnan(xi[0]) and np.isnan(eta[0]) and np.all(np.isnan(jac[0]))
    assert np.all(np.isnan(sky_to_tangent(90.5, 0.0, 0.0, 0.0)))
    west = sky_to_tangent(*tangent_to_sky(-0.5, 0.0, 90.0, 0.0), 0.0, 0.0)
    assert np.isfinite(xi[1]) and xi[1] == pytest.approx(west[0], rel=1e-9)    # 6565 degrees: tan(89.5)
