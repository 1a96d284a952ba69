"""The fixed-point layer (invjax.solvers.fixed_point): Anderson against a dense solve, implicit
derivatives in forward and reverse mode against float64 central differences and the closed-form
derivative of a linear fixed point, vmap, and the one failure policy (raise / nan / ignore) for
the forward solve and for the derivative's linear solve."""

import importlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invjax as ij

N = 12


def _contraction(dtype):
    """f(p, x) = 0.6 tanh(W x) + V p + c with ||W|| = 1: a 0.6-contraction in x, smooth in p."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((N, N)))
    W = jnp.asarray(q @ np.diag(np.linspace(-1, 1, N)) @ q.T, dtype)
    V = jnp.asarray(rng.standard_normal((N, 3)) / 2, dtype)
    c = jnp.asarray(rng.standard_normal(N) / 4, dtype)
    p = jnp.asarray(rng.standard_normal(3), dtype)

    def f(p, x):
        return 0.6 * jnp.tanh(W @ x) + V @ p + c

    return f, p


def test_anderson_matches_a_dense_solve_of_a_linear_fixed_point():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((N, N)))
    M = q @ np.diag(np.linspace(-0.9, 0.9, N)) @ q.T
    b = rng.standard_normal(N)
    x, res, k = ij.solvers.anderson(lambda x: jnp.asarray(M, jnp.float32) @ x + jnp.asarray(b, jnp.float32),
                                    jnp.zeros(N, jnp.float32), memory=N, tol=1e-6)
    exact = np.linalg.solve(np.eye(N) - M, b)
    # |x - x*| <= res |x| / (1 - 0.9)
    assert float(res) <= 1e-6 and int(k) < 40  # the plain iteration needs log(1e-6) / log(0.9) = 131
    assert np.linalg.norm(np.asarray(x) - exact) <= 10 * 1.1e-6 * np.linalg.norm(exact) + 1e-6


def test_forward_and_reverse_derivatives_match_central_differences(x64):
    f, p = _contraction(jnp.float64)
    x0 = jnp.zeros(N, jnp.float64)
    probe = jnp.asarray(np.random.default_rng(2).standard_normal(N))
    dp = jnp.asarray([0.3, -1.0, 0.5])
    h = 1e-6

    def solution(p):
        return ij.solvers.fixed_point(f, p, x0, tol=1e-13, max_iters=200)[0]

    @jax.jit  # one compilation: solves, differences, both derivatives
    def run(p):
        x, stats = ij.solvers.fixed_point(f, p, x0, tol=1e-13, max_iters=200)
        fd = (solution(p + h * dp) - solution(p - h * dp)) / (2 * h)
        jvp = jax.jvp(solution, (p,), (dp,))[1]
        grad = jax.grad(lambda p: probe @ solution(p))(p)
        return x, stats, fd, jvp, grad

    x, stats, fd, jvp, grad = run(p)
    assert bool(stats.converged) and float(stats.residual) <= 1e-13
    np.testing.assert_allclose(np.asarray(f(p, x)), np.asarray(x), rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(jvp), np.asarray(fd), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(float(grad @ dp), float(probe @ fd), rtol=1e-7, atol=1e-9)


def test_linear_fixed_point_derivative_is_the_closed_form(x64):
    # x* = M x* + b  =>  x* = (I - M)^{-1} b: the derivative in b is (I - M)^{-1}, in both modes
    rng = np.random.default_rng(3)
    M = jnp.asarray(0.8 * np.linalg.qr(rng.standard_normal((N, N)))[0])  # orthogonal, scaled: not symmetric
    b = jnp.asarray(rng.standard_normal(N))
    inv = np.linalg.inv(np.eye(N) - np.asarray(M))

    def solution(b):
        return ij.solvers.fixed_point(lambda b, x: M @ x + b, b, jnp.zeros(N), tol=1e-12, max_iters=400)[0]

    jac_fwd, jac_rev = jax.jit(lambda b: (jax.jacfwd(solution)(b), jax.jacrev(solution)(b)))(b)
    np.testing.assert_allclose(np.asarray(jac_fwd), inv, rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.asarray(jac_rev), inv, rtol=0, atol=1e-9)


def test_closed_over_arrays_are_differentiated_too():
    f, p = _contraction(jnp.float32)
    shift = jnp.ones(N, jnp.float32)

    def solution(s):
        return ij.solvers.fixed_point(lambda p, x: f(p, x) + s, p, jnp.zeros(N), tol=1e-6)[0]

    # d x* / d s along s itself: (I - J)^{-1} s, checked through the residual of that system
    @jax.jit
    def run(s):
        x, dx = jax.jvp(solution, (s,), (s,))
        return dx, jax.jvp(lambda x: f(p, x), (x,), (dx,))[1]

    dx, jx = run(shift)
    np.testing.assert_allclose(np.asarray(dx - jx), np.asarray(shift), rtol=0, atol=1e-4)


def test_vmap_agrees_with_single_solves():
    f, p = _contraction(jnp.float32)
    ps = p[None] + jnp.arange(4, dtype=jnp.float32)[:, None] / 4
    one = jax.jit(lambda p: ij.solvers.fixed_point(f, p, jnp.zeros(N), tol=1e-6))
    xs, stats = jax.jit(jax.vmap(one))(ps)
    assert stats.iterations.shape == (4,) and bool(jnp.all(stats.converged))
    for i in range(4):
        np.testing.assert_allclose(np.asarray(xs[i]), np.asarray(one(ps[i])[0]), rtol=1e-5, atol=1e-6)


def test_failure_policy_of_the_forward_solve():
    f, p = _contraction(jnp.float32)
    x0 = jnp.zeros(N, jnp.float32)
    kw = dict(tol=1e-7, max_iters=2, memory=1)
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"fixed_point: the fixed-point iteration stopped at a relative "
                                                       r"residual of about 1e-\d+"):
        jax.block_until_ready(eqx.filter_jit(lambda p: ij.solvers.fixed_point(f, p, x0, **kw))(p))
    (x, stats), (y, stats_y) = jax.jit(lambda p: (ij.solvers.fixed_point(f, p, x0, failure="nan", **kw),
                                                  ij.solvers.fixed_point(f, p, x0, failure="ignore", **kw)))(p)
    assert bool(jnp.all(jnp.isnan(x))) and not bool(stats.converged) and int(stats.iterations) == 2
    x, stats = y, stats_y
    assert bool(jnp.all(jnp.isfinite(x))) and not bool(stats.converged) and float(stats.residual) > 10 * 1e-7


def test_failure_policy_of_the_derivative_solve(monkeypatch):
    # GMRES restarted after every product and one product allowed: one minimal-residual step,
    # far from the tolerance (with its default restart, 12 products solve this 12-dim system)
    monkeypatch.setattr(importlib.import_module("invjax.solvers.fixed_point"), "_RESTART", 1)
    f, p = _contraction(jnp.float32)
    x0 = jnp.zeros(N, jnp.float32)

    def loss(p, failure):
        x = ij.solvers.fixed_point(f, p, x0, tol=1e-6, adjoint_tol=1e-7, adjoint_max_iters=1, failure=failure)[0]
        return jnp.sum(x)

    with pytest.raises(eqx.EquinoxRuntimeError, match=r"linear solve of the implicit derivative stopped"):
        jax.block_until_ready(eqx.filter_jit(jax.grad(loss))(p, "raise"))
    g_nan, g_ignore = jax.jit(lambda p: (jax.grad(loss)(p, "nan"), jax.grad(loss)(p, "ignore")))(p)
    assert bool(jnp.all(jnp.isnan(g_nan))) and bool(jnp.all(jnp.isfinite(g_ignore)))


def test_bad_settings_name_the_argument():
    f, p = _contraction(jnp.float32)
    with pytest.raises(ValueError, match=r"fixed_point: `failure` must be one of"):
        ij.solvers.fixed_point(f, p, jnp.zeros(N), failure="warn")
    with pytest.raises(ValueError, match=r"DEQ: `memory` must be an int >= 1, got 0"):
        ij.solvers.fixed_point(f, p, jnp.zeros(N), memory=0, who="DEQ")
    with pytest.raises(ValueError, match=r"fixed_point: `mixing` must lie in \(0.0, 1.0\], got 1.5"):
        ij.solvers.fixed_point(f, p, jnp.zeros(N), mixing=1.5)
