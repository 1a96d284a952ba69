"""Differentiation beyond the solver matrix (tests/solvers/test_matrix.py): unrolled gradients,
derivatives with respect to an operator's parameters and to weights per direction or per pixel,
singular derivative systems, failed derivative solves, warm starts, compile size."""

import dataclasses
import importlib.util
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invjax as ij

fn = ij.functionals


def _setup(n=16, seed=0):
    rng = np.random.default_rng(seed)
    r = np.arange(5) - 2
    psf = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / 2.0)
    psf /= psf.sum()
    x = np.zeros((n, n))
    x[n // 4 : 3 * n // 4, n // 4 : 3 * n // 4] = 1.0
    x[6 * n // 16 : 10 * n // 16, n // 8 : 7 * n // 16] = 0.4
    A = ij.operators.Convolution(psf, (n, n))
    y = np.asarray(A(x)) + 0.03 * rng.standard_normal((n, n))
    return x, A, y


# solver, problem factory (A, y, w) -> Problem, weight: every solver with a problem it can handle
CASES = {
    "CG": (ij.solvers.CG(max_iters=400, tol=1e-12), lambda A, y, w: ij.Problem(A, y, fn.SquaredL2(), w), 0.05),
    "Landweber": (
        ij.solvers.Landweber(max_iters=20000, tol=1e-12),
        lambda A, y, w: ij.Problem(A, y, fn.Huber(1.0), w),
        0.1,
    ),
    "FISTA": (
        ij.solvers.FISTA(max_iters=5000, tol=1e-12),
        lambda A, y, w: ij.Problem(A, y, fn.SquaredL2(), w, constraint=fn.NonNegative()),
        0.05,
    ),
    "ADMM": (
        ij.solvers.ADMM(max_iters=20000, tol=1e-10, rho=3.0, adapt_iters=0),
        lambda A, y, w: ij.Problem(A, y, fn.TV(boundary="periodic"), w),
        0.02,
    ),
    "PDHG": (
        ij.solvers.PDHG(max_iters=20000, tol=1e-10),
        lambda A, y, w: ij.Problem(A, y, fn.TV(boundary="periodic"), w),
        0.02,
    ),
}


def _loss_fn(x_true, A, y, case, diff, **overrides):
    solver, make, _ = CASES[case]
    solver = dataclasses.replace(solver, diff=diff, **overrides)

    def loss(w):
        sol = ij.solve(make(A, y, w), solver)
        return jnp.sum((sol.x - x_true) ** 2)

    return loss


@pytest.mark.parametrize(
    # (one solver with and one without an inner solve by default; ~8 s each)
    "case", ["CG", pytest.param("FISTA", marks=pytest.mark.slow), pytest.param("ADMM", marks=pytest.mark.slow), "PDHG"]
)
def test_unrolled_gradient_matches_finite_difference_of_same_map(case, x64):
    x, A, y = _setup(n=8)
    # a fixed number of iterations (tol=0): the unrolled map is a smooth function of w
    loss = _loss_fn(x, A, y, case, "unroll", max_iters=24, tol=0.0, checkpoint=4)
    w = CASES[case][2]
    value_and_grad = jax.jit(jax.value_and_grad(loss))
    g = float(value_and_grad(w)[1])
    h = 1e-6 * w
    fd = (float(value_and_grad(w + h)[0]) - float(value_and_grad(w - h)[0])) / (2 * h)
    assert g == pytest.approx(fd, rel=1e-6)


def test_gradient_with_respect_to_data_and_operator(x64):
    """Differentiable with respect to everything in the problem: data and PSF too."""
    x, A, y = _setup()
    solver = ij.solvers.CG(max_iters=400, tol=1e-12)

    def loss(y, psf):
        op = ij.operators.Convolution(psf, y.shape)
        return jnp.sum((ij.solve(ij.Problem(op, y, fn.SquaredL2(), 0.05), solver).x - x) ** 2)

    psf = A.psf
    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    _, (gy, gpsf) = value_and_grad(jnp.asarray(y), psf)
    rng = np.random.default_rng(1)
    for g, arg, i in ((gy, y, 0), (gpsf, psf, 1)):
        d = rng.standard_normal(np.shape(arg))
        h = 1e-6
        args_p = [y, psf]
        args_m = [y, psf]
        args_p[i] = arg + h * d
        args_m[i] = arg - h * d
        fd = (float(value_and_grad(*args_p)[0]) - float(value_and_grad(*args_m)[0])) / (2 * h)
        assert float(jnp.vdot(g, d)) == pytest.approx(fd, rel=1e-4)


def test_compile_does_not_grow_with_max_iters():
    x, A, y = _setup()
    problem = ij.Problem(A, y.astype(np.float32), fn.TV(boundary="periodic"), 0.02)
    sizes = {}
    for diff in ("implicit", "unroll"):
        for n in (100, 10000):
            f = jax.jit(lambda p: ij.solve(p, ij.solvers.PDHG(max_iters=n, diff=diff)).x)
            sizes[diff, n] = len(f.lower(problem).as_text())
        # the programs differ only in the constant max_iters (and a checkpoint segment length)
        assert abs(sizes[diff, 100] - sizes[diff, 10000]) < 200


@pytest.mark.parametrize(
    "layout", ["per-direction", pytest.param("full image", marks=pytest.mark.slow)]  # (CG x-steps: ~15 s)
)
def test_implicit_gradient_with_a_weight_per_direction_matches_finite_difference(x64, layout):
    """A weight per direction, given as shape ``(2, 1, 1)`` (kept circulant: FFT x-step) or
    broadcast to the full ``(2, n, n)`` (an elementwise weight: ADMM takes inexact CG x-steps,
    and its implicit derivative must still be that of the exact solution, which it was not
    before the fixed-point map took an exact x-step)."""
    x, A, y = _setup()
    # ADMM with a split weighted per direction converges slowly at the default penalty (residual
    # 6.5e-7 after 20000 iterations for weights 0.01, 0.04; measured); this penalty reaches 1e-9
    solver = ij.solvers.ADMM(max_iters=20000, tol=1e-9, rho=16000.0, adapt_iters=0)
    expand = (lambda w: w.reshape(2, 1, 1)) if layout == "per-direction" else (lambda w: jnp.broadcast_to(w.reshape(2, 1, 1), (2,) + x.shape))

    def loss(w):
        problem = ij.Problem(A, y, fn.TV(boundary="periodic"), expand(w))
        circulant = problem.split_regularizer()[0].fourier_symbol() is not None
        assert circulant == (layout == "per-direction")
        sol = ij.solve(problem, solver)
        return jnp.sum((sol.x - x) ** 2), sol.stats.converged

    w = jnp.asarray([0.015, 0.03])
    value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (value, converged), g = value_and_grad(w)
    assert bool(converged)
    # one central difference along a direction that weighs both entries (two solves, not four;
    # the gradient's entries have the same sign here, so the opposite signs keep them from
    # hiding each other's error); the differences reuse the compiled program
    d = jnp.asarray([1.0, -0.5]) * w
    h = 1e-5
    fd = (float(value_and_grad(w + h * d)[0][0]) - float(value_and_grad(w - h * d)[0][0])) / (2 * h)
    assert float(g @ d) == pytest.approx(fd, rel=1e-4)
    assert float(g[0]) > 0 and float(g[1]) > 0


def test_a_failed_implicit_derivative_solve_is_not_silent():
    x, A, y = _setup(n=8)
    problem = lambda w: ij.Problem(A, y.astype(np.float32), fn.TV(boundary="periodic"), w)  # noqa: E731
    # one conjugate-gradient iteration cannot reach a 1e-6 relative residual on this system
    strict = ij.solvers.PDHG(max_iters=2000, tol=1e-5, adjoint_iters=1, adjoint_tol=1e-6)
    loss = lambda w, s: jnp.sum(ij.solve(problem(w), s).x ** 2)  # noqa: E731
    with pytest.raises(eqx.EquinoxRuntimeError, match="conjugate-gradient solve of the implicit derivative stopped at a relative residual of about 1e-"):
        eqx.filter_jit(jax.grad(loss))(0.02, strict)
    quiet = dataclasses.replace(strict, adjoint_failure="nan")
    assert np.isnan(float(jax.jit(jax.grad(loss), static_argnums=1)(0.02, quiet)))
    # (adjoint_failure="ignore" returns the unconverged iterate; tuning.sure relies on "nan")


def _benchmark_bars(n, batch):
    spec = importlib.util.spec_from_file_location("_tuning_benchmark", Path(__file__).resolve().parents[2] / "benchmarks" / "tuning.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.bars(jax.random.PRNGKey(11), n, batch)


@pytest.mark.slow  # ~18 s; singular TV duals in the default run: the matrix's TV cases
def test_implicit_gradient_on_piecewise_constant_bars_is_finite_and_right():
    """Horizontal bars, 62 % flat: the TV dual is not unique, ``I - dT/dz`` is singular and a
    float32 solve at tol 1e-3 leaves the GMRES system slightly inconsistent. jax.scipy's GMRES
    returned NaN here for the elementwise (CG x-step) weight; the implicit gradient must be finite
    and match central differences for both weight layouts."""
    n = 32
    x = _benchmark_bars(n, 1)[0]
    A = ij.operators.Convolution(ij.operators.gaussian_psf(5, 1.0), (n, n))
    y = A(x) + 0.05 * jax.random.normal(jax.random.PRNGKey(12), (8, n, n))[0]
    loose = ij.solvers.ADMM(max_iters=300, tol=1e-3, adjoint_tol=1e-2, adapt_iters=10**6)
    tight = ij.solvers.ADMM(max_iters=10000, tol=1e-5, adapt_iters=10**6)
    layouts = {
        "per-direction": lambda w: jnp.exp(w).reshape(2, 1, 1),
        "full image": lambda w: jnp.broadcast_to(jnp.exp(w).reshape(2, 1, 1), (2, n, n)),
    }

    def psnr(w, solver, layout):
        problem = ij.Problem(A, y, fn.TV(boundary="periodic"), layouts[layout](w))
        return ij.metrics.psnr(ij.solve(problem, solver).x, x, data_range=1.0)

    logw = jnp.log(jnp.asarray([0.011, 0.08]))
    h = 3e-3
    f = jax.jit(lambda w: psnr(w, tight, "per-direction"))
    fd = np.array([(float(f(logw.at[i].add(h))) - float(f(logw.at[i].add(-h)))) / (2 * h) for i in range(2)])
    for layout in layouts:
        g = np.asarray(jax.jit(jax.grad(lambda w: psnr(w, loose, layout)))(logw))
        assert np.all(np.isfinite(g)), layout
        # (measured: FD -0.66, -1.00; implicit -0.65 / -0.66, -1.04 / -1.01)
        np.testing.assert_allclose(g, fd, rtol=0.08, err_msg=layout)


def test_admm_warm_start_from_another_weight_and_data_solves_the_new_problem():
    """A warm start carries ADMM's loop constants (A^H y, the Fourier symbols, which include a
    per-direction weight): ``refresh`` recomputes them for the new problem (a stale symbol made
    the warm-started solves of ``tuning.fit`` stall at max_iters)."""
    x, A, y = _setup()
    y = jnp.asarray(y, jnp.float32)
    y2 = y + 0.05 * jax.random.normal(jax.random.PRNGKey(3), y.shape)
    solver = ij.solvers.ADMM(max_iters=3000, tol=1e-5)
    problem = lambda w, y: ij.Problem(A, y, fn.TV(boundary="periodic"), jnp.asarray(w).reshape(2, 1, 1))  # noqa: E731
    solve = eqx.filter_jit(ij.solve)
    first = solve(problem(jnp.asarray([0.01, 0.04]), y), solver)
    cold = solve(problem(jnp.asarray([0.03, 0.005]), y2), solver)
    warm = solve(problem(jnp.asarray([0.03, 0.005]), y2), solver, warm_start=first.state)
    assert bool(cold.stats.converged) and bool(warm.stats.converged)
    np.testing.assert_allclose(warm.x, cold.x, atol=2e-3)
    np.testing.assert_allclose(warm.stats.objective, cold.stats.objective, rtol=1e-4)


def test_solution_state_has_no_silent_zero_derivative():
    """In implicit mode only ``x`` has derivatives: the state's are NaN where used (in both
    modes of differentiation), and a loss of ``x`` alone is unaffected by them."""
    x, A, y = _setup(n=8)
    solver = ij.solvers.PDHG(max_iters=3000, tol=1e-6)

    def solve(w):
        return ij.solve(ij.Problem(A, y.astype(np.float32), fn.TV(boundary="periodic"), w), solver)

    @jax.jit
    def derivatives(w):
        g_x = jax.grad(lambda w: jnp.sum(solve(w).x ** 2))(w)
        g_state = jax.grad(lambda w: jnp.sum(solve(w).state.x ** 2))(w)
        t_state = jax.jvp(lambda w: solve(w).state.p[1], (w,), (jnp.ones_like(w),))[1]
        return g_x, g_state, t_state

    g_x, g_state, t_state = derivatives(0.02)
    assert np.isfinite(float(g_x)) and float(g_x) != 0
    assert np.isnan(float(g_state))
    assert np.all(np.isnan(np.asarray(t_state)))
