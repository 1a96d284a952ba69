"""SURE against the exact trace (Tikhonov, closed form) and against the true risk (TV, nonlinear)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invjax as ij

fn = ij.functionals


def _mc_sure(tik, lam, y, b):
    """Closed-form SURE with the Monte-Carlo trace on the same probes ``b`` (numpy, FFT)."""
    f = tik.influence(lam)
    hb = np.real(np.fft.ifft2(f * np.fft.fft2(np.asarray(b, np.float64)), axes=(-2, -1)))
    trace = np.mean(np.sum(np.asarray(b) * hb, axis=(1, 2)))
    m = y.size
    return (tik.residual2(lam, y) - m * tik.sigma**2 + 2 * tik.sigma**2 * trace) / m


@pytest.mark.parametrize("lam", [3e-3, 3e-2])
def test_sure_risk_matches_closed_form(tik, lam):
    y, key = tik.y[0], jax.random.PRNGKey(0)
    est = ij.tuning.sure_risk(tik.make, lam, y, tik.sigma, key, tik.solver, probes=8)
    # the probes are jax.random.rademacher(key, (probes,) + y.shape): with the same probes the
    # JVP through the solver gives the closed-form b^T H b, so the match is to solver accuracy
    b = jax.random.rademacher(key, (8,) + y.shape, dtype=y.dtype)
    assert float(est) == pytest.approx(_mc_sure(tik, lam, y, b), rel=2e-3)
    # and, with the exact trace, to the Monte-Carlo error (8 probes: ~5% of this small risk)
    assert float(est) == pytest.approx(tik.sure(lam, y), rel=0.1)


def test_sure_minimiser_matches_closed_form(tik):
    keys = jax.random.split(jax.random.PRNGKey(2), 2)
    rule = jax.jit(jax.vmap(lambda y, k: ij.tuning.sure(tik.make, y, tik.sigma, k, tik.solver, bounds=(1e-5, 1.0), iters=14, probes=2, return_info=True)))
    w, info = rule(tik.y, keys)
    for b in range(2):
        probes = jax.random.rademacher(keys[b], (2,) + tik.y[b].shape, dtype=tik.y.dtype)
        exact = tik.argmin(lambda lam: _mc_sure(tik, lam, tik.y[b], probes))
        assert abs(np.log(float(w[b]) / exact)) < 0.05, (float(w[b]), exact)
        assert float(info.value[b]) == pytest.approx(_mc_sure(tik, exact, tik.y[b], probes), rel=5e-3)
        # the minimiser of the exact-trace SURE is close too
        assert abs(np.log(float(w[b]) / tik.argmin(lambda lam: tik.sure(lam, tik.y[b])))) < 0.3
    assert np.all(info.solves == (9 + 14) * 3)


def _tv_deblur(n=24, count=24, sigma=0.05):
    """One image, ``count`` noise draws: the expectation of SURE against that of the true risk."""
    x = ij.phantoms.shepp_logan(n)
    A = ij.operators.Convolution(ij.operators.gaussian_psf(3, 0.7), (n, n))
    ys = A(x) + sigma * jax.random.normal(jax.random.PRNGKey(0), (count, n, n))
    make = lambda w, y: ij.Problem(A, y, fn.TV(boundary="periodic"), w)  # noqa: E731
    solver = ij.solvers.ADMM(max_iters=1000, tol=1e-5, rho=1.0, adjoint_tol=1e-4)
    return x, A, ys, make, solver, sigma


@pytest.mark.parametrize("weighted", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_sure_is_unbiased_for_a_nonlinear_solver(weighted):
    x, A, ys, make, solver, sigma = _tv_deblur()
    W = ij.tuning.regularized_inverse(A, 1e-2) if weighted else None
    w = 0.02
    keys = jax.random.split(jax.random.PRNGKey(1), ys.shape[0])

    @jax.jit
    def one(y, key):
        est = ij.tuning.sure_risk(make, w, y, sigma, key, solver, weighting=W)
        e = A(ij.solve(make(w, y), solver).x - x)
        e = e if W is None else W(e)
        return est, jnp.mean(e**2)

    est, true = jax.vmap(one)(ys, keys)
    diff = np.asarray(est - true)
    # E[SURE] = E[risk]: the mean difference is within 3 standard errors of 0
    assert abs(diff.mean()) < 3 * diff.std(ddof=1) / np.sqrt(len(diff)), (diff.mean(), diff.std())
    # and the estimate is of the right size, draw by draw
    assert abs(np.mean(np.asarray(est)) / np.mean(np.asarray(true)) - 1) < 0.15


@pytest.mark.parametrize("sigma", [0.0, -1.0, np.nan])
def test_sure_rejects_bad_sigma(tik, sigma):
    with pytest.raises(ValueError, match="`sigma` must be finite and > 0"):
        ij.tuning.sure(tik.make, tik.y[0], sigma, jax.random.PRNGKey(0), tik.solver)


def test_sure_traced_bad_sigma_raises_at_run_time(tik):
    f = eqx.filter_jit(lambda s: ij.tuning.sure_risk(tik.make, 0.01, tik.y[0], s, jax.random.PRNGKey(0), tik.solver))
    with pytest.raises(eqx.EquinoxRuntimeError, match="`sigma` must be finite and > 0"):
        f(jnp.asarray(0.0))


def test_sure_bad_input(tik):
    y, key = tik.y[0], jax.random.PRNGKey(0)
    with pytest.raises(TypeError, match="complex"):
        ij.tuning.sure(tik.make, y.astype(jnp.complex64), 0.01, key, tik.solver)
    with pytest.raises(ValueError, match="`probe`"):
        ij.tuning.sure(tik.make, y, 0.01, key, tik.solver, probe="sphere")
    with pytest.raises(TypeError, match="`weighting`"):
        ij.tuning.sure(tik.make, y, 0.01, key, tik.solver, weighting=3.0)
    with pytest.raises(ValueError, match="grid_points"):
        ij.tuning.sure(tik.make, y, 0.01, key, tik.solver, grid_points=2)
    with pytest.raises(TypeError, match="circulant"):
        ij.tuning.regularized_inverse(ij.operators.Mask(np.ones((4, 4)) > 0))
    with pytest.raises(ValueError, match="`eps`"):
        ij.tuning.regularized_inverse(tik.A, 0.0)
