"""The discrepancy principle against its closed-form root for Tikhonov deconvolution."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import brentq

import invjax as ij


def _root(tik, y, tau=1.0):
    target = tau * y.size * tik.sigma**2
    return float(np.exp(brentq(lambda t: np.log(tik.residual2(np.exp(t), y) / target), np.log(1e-8), np.log(1e3), xtol=1e-10)))


@pytest.mark.parametrize("bounds", [(1e-6, 1e2), (1e-5, 1e-4)])  # the second must be pushed out
def test_discrepancy_matches_closed_form_root(tik, bounds):
    rule = jax.jit(jax.vmap(lambda y: ij.tuning.discrepancy(tik.make, y, tik.sigma, solver=tik.solver, bounds=bounds)))
    info = rule(tik.y)
    w = info.weight
    for b in range(2):
        exact = _root(tik, tik.y[b])
        assert float(w[b]) == pytest.approx(exact, rel=0.02)
        # the residual of the solve at the returned weight meets the target
        sol = ij.solve(tik.make(w[b], tik.y[b]), tik.solver)
        r2 = float(jnp.sum((tik.A(sol.x) - tik.y[b]) ** 2))
        assert r2 / (tik.y[b].size * tik.sigma**2) == pytest.approx(1.0, abs=2e-3)
        # the result carries the reconstruction at its weight (the same solve, inside the rule)
        np.testing.assert_allclose(np.asarray(info.x[b]), np.asarray(sol.x), atol=1e-4)
        assert 0 < int(info.iterations[b]) <= tik.solver.max_iters
    assert np.all(np.abs(info.value - 1) <= 1e-3)
    assert not np.any(info.at_bound)


def test_discrepancy_tau_and_unreachable_targets(tik):
    y = tik.y[0]
    w_tau = ij.tuning.discrepancy(tik.make, y, tik.sigma, solver=tik.solver, tau=1.5).weight
    assert float(w_tau) == pytest.approx(_root(tik, y, 1.5), rel=0.02)
    # a noise level far above the data's energy: no weight leaves that large a residual
    info = ij.tuning.discrepancy(tik.make, y, 100.0, solver=tik.solver, bounds=(1e-3, 1e-1), expand=2)
    w = info.weight
    assert bool(info.at_bound) and float(w) == pytest.approx(1e-1 * 100**2, rel=1e-4)
    assert "widen `bounds`" in info.message
    # at an unbracketed end the reconstruction is that end's (the expanded upper one)
    np.testing.assert_allclose(np.asarray(info.x), np.asarray(ij.solve(tik.make(w, y), tik.solver).x), atol=1e-4)
    assert int(info.solves) == 4  # two ends, two expansions
    # a tiny noise level: even the smallest weight leaves too large a residual
    info = ij.tuning.discrepancy(tik.make, y, 1e-6, solver=tik.solver, bounds=(1e-3, 1e-1), expand=1)
    w = info.weight
    assert bool(info.at_bound) and float(w) == pytest.approx(1e-5, rel=1e-4)


@pytest.mark.parametrize("sigma", [0.0, -0.01, np.nan, np.inf])
def test_discrepancy_rejects_bad_sigma(tik, sigma):
    with pytest.raises(ValueError, match="`sigma` must be finite and > 0"):
        ij.tuning.discrepancy(tik.make, tik.y[0], sigma, solver=tik.solver)


def test_discrepancy_traced_bad_sigma_raises_at_run_time(tik):
    f = eqx.filter_jit(lambda s: ij.tuning.discrepancy(tik.make, tik.y[0], s, solver=tik.solver, max_iters=2))
    with pytest.raises(eqx.EquinoxRuntimeError, match="`sigma` must be finite and > 0"):
        f(jnp.asarray(-1.0))


def test_discrepancy_bad_settings(tik):
    y = tik.y[0]
    with pytest.raises(ValueError, match="`tau`"):
        ij.tuning.discrepancy(tik.make, y, 0.01, solver=tik.solver, tau=0.0)
    with pytest.raises(ValueError, match="`tol`"):
        ij.tuning.discrepancy(tik.make, y, 0.01, solver=tik.solver, tol=2.0)
    with pytest.raises(ValueError, match="scalar noise"):
        ij.tuning.discrepancy(tik.make, y, jnp.ones(3), solver=tik.solver)


# ---- what counts as a measurement --------------------------------------------------------------
def test_operators_count_the_entries_they_measure():
    mask = jnp.zeros((8, 6)).at[::2].set(1.0)
    assert int(ij.operators.Mask(mask).n_measurements) == 24
    assert int(jax.jit(lambda m: ij.operators.Mask(m).n_measurements)(mask)) == 24  # a traced mask
    mri = ij.operators.CartesianMRI(jnp.zeros((8, 8)).at[:, :3].set(1.0), dtype=jnp.complex64)
    assert int(mri.n_measurements) == 24
    coils = ij.operators.CartesianMRI(jnp.zeros((8, 8)).at[:, :3].set(1.0), sensitivities=jnp.ones((4, 8, 8), jnp.complex64))
    assert int(coils.n_measurements) == 4 * 24
    blur = ij.operators.Convolution(ij.operators.gaussian_psf(3, 1.0), (8, 6))
    assert blur.n_measurements == 48  # every entry of y
    assert int((ij.operators.Mask(mask) @ blur).n_measurements) == 24  # the outer operator measures
    assert int((2.0 * ij.operators.Mask(mask)).n_measurements) == 24


def test_discrepancy_counts_the_observed_entries_of_masked_data():
    """Inpainting with half the pixels seen (unseen entries of y are zeros): at tau = 1 the rule
    lands where ||A x - y||^2 = m sigma^2 with m the observed count. Checked by independent solves
    around the returned weight (the residual grows with the weight): the root lies within 0.1 of it
    in log-weight, and counting y.size would aim at a residual not reached even 0.5 above it."""
    n, sigma = 32, 0.05
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    mask = jax.random.bernoulli(k1, 0.5, (n, n)).astype(jnp.float32)
    A = ij.operators.Mask(mask)
    x = ij.phantoms.shepp_logan(n)
    y = mask * (x + sigma * jax.random.normal(k2, (n, n)))
    m = int(np.asarray(mask).sum())
    assert int(A.n_measurements) == m and 0.4 < m / y.size < 0.6
    make = lambda w, y: ij.Problem(A, y, ij.functionals.TV(), w)  # noqa: E731
    solver = ij.solvers.PDHG(max_iters=3000, tol=1e-6)
    info = ij.tuning.discrepancy(make, y, sigma, solver=solver, bounds=(1e-4, 1.0))
    w = info.weight
    assert float(info.value) == pytest.approx(1.0, abs=2e-3) and not bool(info.at_bound)
    shifts = jnp.asarray([-0.1, 0.1, 0.5])
    r2 = jax.jit(jax.vmap(lambda s: jnp.sum((A(ij.solve(make(w * jnp.exp(s), y), solver).x) - y) ** 2)))(shifts)
    ratio = np.asarray(r2, np.float64) / (m * sigma**2)
    assert ratio[0] < 1 < ratio[1], ratio
    # the old count (y.size) aims at a residual twice as large: a clearly larger weight
    assert ratio[2] < y.size / m, (ratio, y.size / m)
