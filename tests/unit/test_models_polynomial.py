"""PolyBasis2D: term order, normalisation, analytic derivatives, least-squares fit."""

import numpy as np
import pytest

from jointcal_core.models.polynomial import PolyBasis2D, monomials, poly_terms

DOMAIN = (-0.5, 2111.5, -0.5, 4643.5)   # a MegaCam CCD bbox (x_min, x_max, y_min, y_max)


def test_terms_are_ordered_by_degree_then_decreasing_x_power():
    assert poly_terms(2).tolist() == [[0, 0], [1, 0], [0, 1], [2, 0], [1, 1], [0, 2]]
    for order in range(8):
        terms = poly_terms(order)
        assert len(terms) == (order + 1) * (order + 2) // 2
        assert np.all(np.diff(terms.sum(axis=1)) >= 0)


def test_domain_maps_to_unit_square():
    basis = PolyBasis2D(1, DOMAIN)
    design = basis.evaluate([DOMAIN[0], DOMAIN[1], 1055.5], [DOMAIN[2], DOMAIN[3], 2321.5])
    # columns 1, x_n, y_n
    np.testing.assert_allclose(design[:, 1], [-1, 1, 0], atol=1e-12)
    np.testing.assert_allclose(design[:, 2], [-1, 1, 0], atol=1e-12)


def test_evaluate_matches_hand_computed_monomials():
    xn, yn = 0.3, -0.7
    expected = [1, xn, yn, xn**2, xn * yn, yn**2, xn**3, xn**2 * yn, xn * yn**2, yn**3]
    np.testing.assert_allclose(monomials(np.array([xn]), np.array([yn]), 3)[0], expected, rtol=1e-14)


@pytest.mark.parametrize("order", [1, 3, 5, 7])
def test_derivatives_match_finite_differences(order):
    rng = np.random.default_rng(order)
    basis = PolyBasis2D(order, DOMAIN)
    x, y = rng.uniform(0, 2111, 50), rng.uniform(0, 4643, 50)
    dx, dy = basis.derivatives(x, y)
    h = 1e-3   # pixels
    fd_x = (basis.evaluate(x + h, y) - basis.evaluate(x - h, y)) / (2 * h)
    fd_y = (basis.evaluate(x, y + h) - basis.evaluate(x, y - h)) / (2 * h)
    np.testing.assert_allclose(dx, fd_x, atol=1e-9)
    np.testing.assert_allclose(dy, fd_y, atol=1e-9)


def test_fit_recovers_a_polynomial_exactly():
    rng = np.random.default_rng(3)
    basis = PolyBasis2D(4, DOMAIN)
    coeffs = rng.normal(size=(basis.n_terms, 2))
    x, y = basis.grid(10)
    values = basis.evaluate(x, y) @ coeffs
    np.testing.assert_allclose(basis.fit(x, y, values), coeffs, atol=1e-10)


def test_fit_refuses_too_few_points():
    basis = PolyBasis2D(3, DOMAIN)
    with pytest.raises(ValueError, match="cannot fit"):
        basis.fit([0, 1, 2], [0, 1, 2], [0, 1, 2])
