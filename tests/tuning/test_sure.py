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
    est = ij.tuning.sure_risk(tik.make, y, tik.sigma, key, weight=lam, solver=tik.solver, probes=8)
    # the probes are jax.random.rademacher(key, (probes,) + y.shape): with the same probes the
    # JVP through the solver gives the closed-form b^T H b, so the match is to solver accuracy
    b = jax.random.rademacher(key, (8,) + y.shape, dtype=y.dtype)
    assert float(est) == pytest.approx(_mc_sure(tik, lam, y, b), rel=2e-3)
    # and, with the exact trace, to the Monte-Carlo error (8 probes: ~5% of this small risk)
    assert float(est) == pytest.approx(tik.sure(lam, y), rel=0.1)


def test_sure_minimiser_matches_closed_form(tik):
    keys = jax.random.split(jax.random.PRNGKey(2), 2)
    rule = jax.jit(jax.vmap(lambda y, k: ij.tuning.sure(tik.make, y, tik.sigma, k, solver=tik.solver, bounds=(1e-5, 1.0), batch=4, refine=5, probes=2)))
    info = rule(tik.y, keys)
    w = info.weight
    for b in range(2):
        probes = jax.random.rademacher(keys[b], (2,) + tik.y[b].shape, dtype=tik.y.dtype)
        exact = tik.argmin(lambda lam: _mc_sure(tik, lam, tik.y[b], probes))
        assert abs(np.log(float(w[b]) / exact)) < 0.05, (float(w[b]), exact)
        assert float(info.value[b]) == pytest.approx(_mc_sure(tik, exact, tik.y[b], probes), rel=5e-3)
        # the minimiser of the exact-trace SURE is close too
        assert abs(np.log(float(w[b]) / tik.argmin(lambda lam: tik.sure(lam, tik.y[b])))) < 0.3
    # 8 grid weights in 2 batches of 4, then 5 zoom rounds of 4; each weight solved at y and 2 probes
    assert np.all(info.solves == (2 + 5) * 4 * 3)
    # what it saw: every weight, increasing, its value and flag; the choice among them
    ws, vs = np.asarray(info.weights), np.asarray(info.values)
    assert ws.shape == (2, 28) and np.all(np.diff(ws, axis=1) > 0) and np.all(np.isfinite(vs))
    assert np.allclose(vs.min(axis=1), info.value) and np.all(info.converged)
    assert np.all(np.asarray(info.weights_converged)[:, 1:])  # (CG's 400 steps do not reach 1e-6 at 1e-5 alone)


def _tv_deblur(n=24, count=24, sigma=0.05):
    """One image, ``count`` noise draws: the expectation of SURE against that of the true risk."""
    x = ij.phantoms.shepp_logan(n)
    A = ij.operators.Convolution(ij.operators.gaussian_psf(3, 0.7), (n, n))
    ys = A(x) + sigma * jax.random.normal(jax.random.PRNGKey(0), (count, n, n))
    make = lambda w, y: ij.Problem(A, y, fn.TV(boundary="periodic"), w)  # noqa: E731
    solver = ij.solvers.ADMM(max_iters=1000, tol=1e-5, rho=1.0, adjoint_tol=1e-4)
    return x, A, ys, make, solver, sigma


@pytest.mark.parametrize("weighted,divergence", [(False, "fd"), (False, "jvp"),
                                                  pytest.param(True, "fd", marks=pytest.mark.slow)])
def test_sure_is_unbiased_for_a_nonlinear_solver(weighted, divergence):
    x, A, ys, make, solver, sigma = _tv_deblur()
    W = ij.tuning.regularized_inverse(A, 1e-2) if weighted else None
    w = 0.02
    keys = jax.random.split(jax.random.PRNGKey(1), ys.shape[0])

    @jax.jit
    def one(y, key):
        est = ij.tuning.sure_risk(make, y, sigma, key, weight=w, solver=solver, weighting=W, divergence=divergence)
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
        ij.tuning.sure(tik.make, tik.y[0], sigma, jax.random.PRNGKey(0), solver=tik.solver)


def test_sure_traced_bad_sigma_raises_at_run_time(tik):
    f = eqx.filter_jit(lambda s: ij.tuning.sure_risk(tik.make, tik.y[0], s, jax.random.PRNGKey(0), weight=0.01, solver=tik.solver))
    with pytest.raises(eqx.EquinoxRuntimeError, match="`sigma` must be finite and > 0"):
        f(jnp.asarray(0.0))


def test_sure_bad_input(tik):
    y, key = tik.y[0], jax.random.PRNGKey(0)
    with pytest.raises(TypeError, match="complex .* the operator's output is real"):
        ij.tuning.sure(tik.make, y.astype(jnp.complex64), 0.01, key, solver=tik.solver)
    with pytest.raises(ValueError, match="`divergence` must be one of"):
        ij.tuning.sure(tik.make, y, 0.01, key, solver=tik.solver, divergence="exact")
    with pytest.raises(ValueError, match="`epsilon` must be a finite number > 0"):
        ij.tuning.sure(tik.make, y, 0.01, key, solver=tik.solver, epsilon=0.0)
    with pytest.raises(ValueError, match="`weights` must be increasing"):
        ij.tuning.sure(tik.make, y, 0.01, key, solver=tik.solver, weights=jnp.array([1e-2, 1e-3, 1e-1]))
    with pytest.raises(ValueError, match="`weights` must be finite and > 0"):
        ij.tuning.sure_grid(tik.make, y, 0.01, key, solver=tik.solver, weights=jnp.array([1e-2, -1.0]))
    with pytest.raises(ValueError, match="`batch` must be an int >= 1"):
        ij.tuning.sure(tik.make, y, 0.01, key, solver=tik.solver, batch=0)
    with pytest.raises(ValueError, match="`probe` must be one of"):
        ij.tuning.sure(tik.make, y, 0.01, key, solver=tik.solver, probe="sphere")
    with pytest.raises(TypeError, match="`weighting` must be None or a linear callable"):
        ij.tuning.sure(tik.make, y, 0.01, key, solver=tik.solver, weighting=3.0)
    with pytest.raises(ValueError, match="`grid_points` must be an int >= 3"):
        ij.tuning.sure(tik.make, y, 0.01, key, solver=tik.solver, grid_points=2)
    with pytest.raises(ValueError, match="`iterations` must be an int >= 1"):
        ij.tuning.regularized_inverse(ij.operators.Mask(np.ones((4, 4)) > 0), iterations=0)
    with pytest.raises(ValueError, match="`eps` must be a finite number > 0"):
        ij.tuning.regularized_inverse(tik.A, 0.0)


# ---- the batched grid ----------------------------------------------------------------------------
def test_sure_grid_equals_per_weight_solves(tik):
    """One compiled grid = one solve per weight (x, value, residual), whichever chunking."""
    y, key = tik.y[0], jax.random.PRNGKey(4)
    ws = jnp.asarray([1e-4, 1e-3, 1e-2, 1e-1], jnp.float32)
    res = ij.tuning.sure_grid(tik.make, y, tik.sigma, key, solver=tik.solver, weights=ws, probes=2, divergence="fd")
    again = ij.tuning.sure_grid(tik.make, y, tik.sigma, key, solver=tik.solver, weights=ws, probes=2, divergence="fd", chunk=1)
    b = ij.tuning.probes(key, y, 2)
    assert res.reconstructions.shape == (4, tik.n, tik.n) and int(res.measurements) == y.size
    assert bool(np.all(res.weights_converged))
    # the result's own choice: the grid weight of least SURE, its reconstruction
    best = int(np.argmin(np.asarray(res.values)))
    assert float(res.weight) == float(ws[best]) and float(res.value) == float(res.values[best])
    np.testing.assert_array_equal(np.asarray(res.x), np.asarray(res.reconstructions[best]))
    for g, w in enumerate(ws):
        x = ij.solve(tik.make(w, y), tik.solver).x
        # (to CG's tol 1e-6: at 1e-4 the system is ill-conditioned enough for 4e-4 in x)
        np.testing.assert_allclose(res.reconstructions[g], x, atol=1e-3)
        # chunked and whole-grid solves differ by float32 rounding only (XLA fuses the batches
        # differently); the divergence's difference quotient (step 0.1 sigma) multiplies that by
        # ~10/sigma: 1.6e-4 relative measured at the ill-conditioned 1e-4
        np.testing.assert_allclose(again.values[g], res.values[g], rtol=1e-3)
        assert float(res.residual[g]) == pytest.approx(float(jnp.sum((tik.A(x) - y) ** 2)), rel=1e-3)
        one = ij.tuning.sure_risk(tik.make, y, tik.sigma, key, weight=w, solver=tik.solver, probes=2, divergence="fd")
        # (one solve vs the batched grid: float32 rounding times the difference quotient, as above)
        assert float(res.values[g]) == pytest.approx(float(one), rel=1e-3)
        # the exact JVP divergence agrees (a linear reconstruction: the difference quotient is exact
        # but for CG's stopping error over the step, 1 % at the ill-conditioned 1e-4)
        jvp = ij.tuning.sure_risk(tik.make, y, tik.sigma, key, weight=w, solver=tik.solver, probes=2)
        assert float(jvp) == pytest.approx(float(one), rel=2e-2)
        # the same number from the formula on precomputed reconstructions
        xp = jnp.stack([ij.solve(tik.make(w, y + 0.1 * tik.sigma * bp), tik.solver).x for bp in b])
        est = ij.tuning.sure_estimate(tik.A, y, tik.sigma, b, x[None], xp[None])
        assert float(est[0]) == pytest.approx(float(one), rel=2e-3)
        # and the closed form with the exact trace, to Monte-Carlo accuracy (2 probes)
        assert float(one) == pytest.approx(tik.sure(float(w), y), rel=0.25)


def test_sure_on_a_given_grid_picks_its_minimum_and_vmaps(tik):
    ws = jnp.logspace(-4, 0, 9)
    keys = jax.random.split(jax.random.PRNGKey(5), 2)
    rule = jax.jit(jax.vmap(lambda y, k: ij.tuning.sure(tik.make, y, tik.sigma, k, solver=tik.solver, weights=ws, refine=0,
                                                         batch=9)))
    info = rule(tik.y, keys)
    w = info.weight
    for i in range(2):
        res = ij.tuning.sure_grid(tik.make, tik.y[i], tik.sigma, keys[i], solver=tik.solver, weights=ws)
        # the rule returns a grid point, the one whose (warm-started) value is smallest, and that
        # point is a minimiser of the cold-started grid up to their agreement (rtol 1e-2 below)
        chosen = int(np.argmin(np.abs(np.asarray(ws) - float(w[i]))))
        assert float(w[i]) == pytest.approx(float(ws[chosen]), rel=1e-5)
        assert chosen == int(np.argmin(np.asarray(info.values[i])))
        assert float(res.values[chosen]) <= float(jnp.min(res.values)) * (1 + 1e-2)
        # the rule's scan warm-starts each solve from the previous weight's, the grid starts cold:
        # CG stops (at tol 1e-6) at other points, which the difference quotient amplifies
        # (6.7e-3 relative measured at the ill-conditioned 1e-4, 5e-4 elsewhere)
        np.testing.assert_allclose(info.values[i], res.values, rtol=1e-2)
    assert np.all(info.solves == 9 * 2)


def _mc(values, truth):
    d = np.asarray(values, np.float64) - np.asarray(truth, np.float64)
    return d.mean(), d.std(ddof=1) / np.sqrt(len(d))


def _linear_case(kind):
    """(op, x_true, linear reconstruction, noise draw, sigma, weighting)."""
    n = 8
    x = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (n, n)), jnp.float32)
    if kind in ("real", "weighted"):
        op = ij.operators.Convolution(ij.operators.gaussian_psf(3, 0.8), (n, n))
        a = op.fourier_symbol()[0]

        def rec(y):  # Tikhonov (A^T A + 0.05 I)^{-1} A^T y by FFT
            return jnp.fft.irfft2(jnp.conj(a) * jnp.fft.rfft2(y) / (jnp.abs(a) ** 2 + 0.05), s=(n, n))

        def noise(key, sigma):
            return sigma * jax.random.normal(key, (n, n))

        return op, x, rec, noise, 0.1, (None if kind == "real" else ij.tuning.regularized_inverse(op, 1e-2))
    mask = jnp.zeros((n, n)).at[::2].set(1.0).at[1].set(1.0)  # 5 of 8 k-space lines
    op = ij.operators.CartesianMRI(mask, dtype=jnp.complex64)

    def rec(y):  # (A^H A + 0.3 I)^{-1} A^H y = A^H y / 1.3 (A is a partial isometry)
        return op.T(y) / 1.3

    def noise(key, sigma):
        return mask * ij.noise.gaussian(key, jnp.zeros((n, n), jnp.complex64), sigma)

    return op, x, rec, noise, 0.1, None


@pytest.mark.parametrize("kind", ["real", "weighted", "complex"])
def test_sure_estimate_is_unbiased_for_the_risk_it_estimates(kind):
    """A linear reconstruction and 2000 noise draws: the mean of SURE (no truth) matches the mean of
    the risk it estimates (with the truth): measurement domain, projected, complex (masked MRI:
    m = sampled entries, Re<.,.>, complex probes)."""
    op, x, rec, noise, sigma, W = _linear_case(kind)
    y0 = op(x.astype(op.dtype))

    def one(key):
        k1, k2 = jax.random.split(key)
        y = y0 + noise(k1, sigma)
        b = ij.tuning.probes(k2, y, 1, "gaussian" if kind == "complex" else "rademacher")
        xs, xp = rec(y)[None], jax.vmap(rec)(y + 0.1 * sigma * b)[None]
        e = op.mv(xs[0] - x.astype(xs.dtype))
        e = e if W is None else W(e)
        size = op.n_measurements if W is None else e.size
        return ij.tuning.sure_estimate(op, y, sigma, b, xs, xp, weighting=W)[0], jnp.sum(jnp.abs(e) ** 2) / size

    sure, risk = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), 2000))
    mean, stderr = _mc(sure, risk)
    assert abs(mean) < 4 * stderr + 1e-3 * float(np.mean(risk)), (mean, stderr, float(np.mean(risk)))


@pytest.mark.slow  # (~30 s on a loaded core; the complex formula runs by default in the sure_estimate test)
def test_complex_mri_sure_tracks_the_true_mse():
    """TV on 4x-undersampled single-coil MRI (complex image, PDHG, fixed iterations): averaged over
    noise draws, SURE's mean equals the mean of the true ||A (x - x_true)||^2 / m."""
    n, sigma = 16, 0.05
    mask = jnp.zeros((n, n)).at[::4].set(1.0).at[1].set(1.0).at[-1].set(1.0)
    op = ij.operators.CartesianMRI(mask, dtype=jnp.complex64)
    x = ij.phantoms.shepp_logan(n).astype(jnp.complex64)
    solver = ij.solvers.PDHG(max_iters=60, tol=0.0)
    make = lambda w, y: ij.Problem(op, y, fn.TV(), w)  # noqa: E731
    assert int(op.n_measurements) == int(mask.sum())

    @jax.jit
    def one(key):
        k1, k2 = jax.random.split(key)
        y = mask * ij.noise.gaussian(k1, op(x), sigma)
        est = ij.tuning.sure_risk(make, y, sigma, k2, weight=0.01, solver=solver, probe="gaussian", divergence="fd")
        e = op.mv(ij.solve(make(0.01, y), solver).x - x)
        return est, jnp.sum(jnp.abs(e) ** 2) / op.n_measurements

    est, true = jax.lax.map(one, jax.random.split(jax.random.key(3), 48))
    mean, stderr = _mc(est, true)
    assert abs(mean) < 3 * stderr, (mean, stderr)
    assert abs(float(np.mean(est)) / float(np.mean(true)) - 1) < 0.15


@pytest.mark.slow  # (~45 s on a loaded core; the projected formula runs by default in the sure_estimate test)
def test_projected_sure_on_small_ct():
    """Sparse-view CT (fewer measurements than pixels): projected SURE through the CG Tikhonov
    inverse tracks the true projected error on average, and its minimiser sits near the true one."""
    n = 16
    op = ij.operators.ParallelBeam2D((n, n), np.linspace(0, np.pi, 8, endpoint=False))
    x = ij.phantoms.shepp_logan(n)
    sigma = 0.05 * float(jnp.mean(jnp.abs(op(x))))
    W = ij.tuning.regularized_inverse(op, 1e-3)
    solver = ij.solvers.PDHG(max_iters=80, tol=0.0)
    make = lambda w, y: ij.Problem(op, y, fn.TV(), w, constraint=fn.NonNegative())  # noqa: E731
    ws = sigma**2 * jnp.geomspace(0.5, 32, 7)

    @jax.jit
    def one(key):
        k1, k2 = jax.random.split(key)
        y = op(x) + sigma * jax.random.normal(k1, op.out_shape)
        res = ij.tuning.sure_grid(make, y, sigma, k2, solver=solver, weights=ws, weighting=W, divergence="fd")
        e = jax.vmap(lambda xi: W(op.mv(xi - x)))(res.reconstructions)
        return res.values, jnp.mean(e**2, axis=(1, 2))

    est, true = jax.lax.map(one, jax.random.split(jax.random.key(2), 16))
    est, true = np.asarray(est, np.float64), np.asarray(true, np.float64)
    for g in range(len(ws)):
        mean, stderr = _mc(est[:, g], true[:, g])
        assert abs(mean) < 3.5 * stderr + 0.05 * true[:, g].mean(), (g, mean, stderr)
    assert abs(int(np.argmin(est.mean(0))) - int(np.argmin(true.mean(0)))) <= 1


def test_regularized_inverse_matches_the_dense_formula():
    rng = np.random.default_rng(0)
    M = rng.standard_normal((20, 30)).astype(np.float32)
    op = ij.operators.Dense(M)
    vs = rng.standard_normal((3, 20)).astype(np.float32)
    eps = 0.05
    c = np.sum((M @ np.ones(30)) ** 2) / 30
    want = np.linalg.solve(M.T @ M + eps * c * np.eye(30), M.T @ vs.T).T
    W = ij.tuning.regularized_inverse(op, eps)
    got = np.asarray(jax.jit(jax.vmap(W))(jnp.asarray(vs)))
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-4)
    # the FFT path of a circulant operator: W A is the filter |a|^2 / (|a|^2 + eps max|a|^2)
    A = ij.operators.Convolution(ij.operators.gaussian_psf(3, 0.8), (8, 8))
    v = jnp.asarray(rng.standard_normal((8, 8)), jnp.float32)
    dense = np.asarray(A.as_matrix(), np.float64)
    want = np.linalg.solve(dense.T @ dense + 1e-2 * np.eye(64), dense.T @ np.asarray(v).ravel())
    np.testing.assert_allclose(np.asarray(ij.tuning.regularized_inverse(A, 1e-2)(v)).ravel(), want, rtol=1e-3, atol=1e-4)
