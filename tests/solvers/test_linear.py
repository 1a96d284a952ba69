"""The one linear-solve layer (invjax.solvers.linear): against numpy's dense solves on small
SPD and complex Hermitian systems, forward, reverse and forward-mode derivatives against central
differences (float64), both differentiation modes; non-convergence reported, and raised where
the caller asked (also by the ridge prox's derivative)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from invjax.solvers import linear

N = 10


def _system(rng, complex_):
    M = rng.standard_normal((N, N)) + (1j * rng.standard_normal((N, N)) if complex_ else 0)
    H = M.conj().T @ M + 0.5 * np.eye(N)
    b = rng.standard_normal(N) + (1j * rng.standard_normal(N) if complex_ else 0)
    return H, b


def _solver(H, unroll, **kw):
    D = np.diag(np.linspace(0.0, 1.0, N))  # dH/dtheta: a parameter the matvec closes over

    def solve(theta, b):
        Ht = jnp.asarray(H) + theta * jnp.asarray(D)
        return linear.cg(lambda v: Ht @ v, b, tol=1e-13, max_iters=80 if unroll else 300, unroll=unroll, **kw)

    return solve, D


@pytest.mark.parametrize("unroll", [False, True], ids=["implicit", "unroll"])
@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_solution_and_derivatives_match_numpy_and_central_differences(x64, rng, complex_, unroll):
    H, b = _system(rng, complex_)
    solve, D = _solver(H, unroll)
    theta = 0.3
    x, stats = jax.jit(solve)(theta, jnp.asarray(b))
    expected = np.linalg.solve(H + theta * D, b)
    np.testing.assert_allclose(np.asarray(x), expected, rtol=1e-10, atol=1e-11)
    assert bool(stats.converged) and float(stats.residual) <= 1e-12
    true_residual = np.linalg.norm(b - (H + theta * D) @ np.asarray(x)) / np.linalg.norm(b)
    assert float(stats.residual) == pytest.approx(true_residual, rel=1e-3, abs=1e-15)

    w = np.arange(1.0, N + 1)
    loss = jax.jit(lambda t, bb: jnp.sum(jnp.abs(solve(t, bb)[0] * w) ** 2))
    g_theta, g_b = jax.grad(loss, argnums=(0, 1))(theta, jnp.asarray(b))
    d = rng.standard_normal(N) + (1j * rng.standard_normal(N) if complex_ else 0)
    h = 1e-6
    fd_theta = (loss(theta + h, jnp.asarray(b)) - loss(theta - h, jnp.asarray(b))) / (2 * h)
    fd_b = (loss(theta, jnp.asarray(b + h * d)) - loss(theta, jnp.asarray(b - h * d))) / (2 * h)
    assert float(g_theta) == pytest.approx(float(fd_theta), rel=1e-6)
    # JAX's gradient in a complex input g satisfies dL = Re sum(g * db)
    assert float(np.real(np.sum(np.asarray(g_b) * d))) == pytest.approx(float(fd_b), rel=1e-6)
    # the closed form: dx = H^-1 (db - dH x)
    _, t = jax.jvp(lambda tt, bb: solve(tt, bb)[0], (theta, jnp.asarray(b)), (1.0, jnp.asarray(d)))
    Ht = H + theta * D
    np.testing.assert_allclose(np.asarray(t), np.linalg.solve(Ht, d - D @ expected), rtol=1e-8, atol=1e-10)


def test_preconditioner_and_warm_start(x64, rng):
    # badly scaled SPD: a Jacobi preconditioner cuts the iterations; a warm start next to the
    # solution needs fewer still; the answer is numpy's either way
    H, b = _system(rng, False)
    s = np.logspace(0, 2, N)
    H = s[:, None] * H * s[None, :]
    inv_diag = jnp.asarray(1 / np.diag(H))
    matvec = lambda v: jnp.asarray(H) @ v  # noqa: E731
    expected = np.linalg.solve(H, b)
    plain = linear.cg(matvec, jnp.asarray(b), tol=1e-10, max_iters=500)
    jacobi = linear.cg(matvec, jnp.asarray(b), tol=1e-10, max_iters=500, precondition=lambda r: r * inv_diag)
    warm = linear.cg(matvec, jnp.asarray(b), tol=1e-10, max_iters=500, precondition=lambda r: r * inv_diag,
                     x0=jnp.asarray(expected * (1 + 1e-9)))
    for x, stats in (plain, jacobi, warm):
        np.testing.assert_allclose(np.asarray(x), expected, rtol=1e-7)
        assert bool(stats.converged)
    assert int(jacobi[1].iterations) < int(plain[1].iterations)
    assert int(warm[1].iterations) < int(jacobi[1].iterations)
    # reduction: stop once the warm start's residual has fallen 100-fold, not at tol
    loose = linear.cg(matvec, jnp.asarray(b), tol=1e-14, max_iters=500, reduction=1e-2)[1]
    assert int(loose.iterations) < int(plain[1].iterations) and float(loose.residual) <= 1e-2


def test_projected_solve_is_the_pseudo_inverse(x64, rng):
    # H = P H P positive definite on the range of an orthogonal projection P (the implicit
    # derivative's manifold): every solve (and its transpose) is (P H P)^+ P b
    H, b = _system(rng, False)
    keep = np.arange(N) % 3 != 0
    P = np.diag(keep.astype(float))
    project = lambda v: v * jnp.asarray(keep, v.dtype)  # noqa: E731
    matvec = lambda v: project(jnp.asarray(H) @ project(v))  # noqa: E731
    pinv = np.linalg.pinv(P @ H @ P)
    x, stats = linear.cg(matvec, jnp.asarray(b), tol=1e-12, max_iters=100, project=project)
    np.testing.assert_allclose(np.asarray(x), pinv @ b, rtol=1e-9, atol=1e-12)
    c = rng.standard_normal(N)
    g = jax.grad(lambda bb: jnp.vdot(jnp.asarray(c), linear.cg(matvec, bb, tol=1e-12, max_iters=100, project=project)[0]))(jnp.asarray(b))
    np.testing.assert_allclose(np.asarray(g), pinv.T @ c, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("unroll", [False, True], ids=["implicit", "unroll"])
def test_non_convergence_is_reported_and_raised_on_request(x64, rng, unroll):
    H, b = _system(rng, False)
    matvec = lambda v: jnp.asarray(H) @ v  # noqa: E731
    x, stats = linear.cg(matvec, jnp.asarray(b), tol=1e-10, max_iters=2, unroll=unroll)
    assert not bool(stats.converged) and int(stats.iterations) == 2
    true_residual = np.linalg.norm(b - H @ np.asarray(x)) / np.linalg.norm(b)
    assert float(stats.residual) == pytest.approx(true_residual, rel=1e-6) and true_residual > 1e-3
    raising = eqx.filter_jit(lambda bb: linear.cg(matvec, bb, tol=1e-10, max_iters=2, unroll=unroll, failure="raise")[0])
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"conjugate-gradient solve stopped at a relative residual of about 1e-"):
        jax.block_until_ready(raising(jnp.asarray(b)))
    nan = linear.cg(matvec, jnp.asarray(b), tol=1e-10, max_iters=2, unroll=unroll, failure="nan")[0]
    assert np.all(np.isnan(np.asarray(nan)))
    with pytest.raises(ValueError, match=r"cg: `failure` must be one of"):
        linear.cg(matvec, jnp.asarray(b), tol=1e-10, max_iters=2, failure="warn")


def test_a_failed_derivative_solve_raises_in_reverse_mode(x64, rng):
    # the forward solve converges; its cotangent solve (a different right-hand side, with the
    # same iteration limit) follows the same failure policy as every other solve of the call
    H, b = _system(rng, True)
    matvec = lambda v: jnp.asarray(H) @ v  # noqa: E731
    b1 = np.linalg.eigh(H)[1][:, 0]  # an eigenvector: CG converges in one step
    loss = lambda bb, failure: jnp.sum(jnp.abs(linear.cg(matvec, bb, tol=1e-10, max_iters=1, failure=failure)[0] * np.arange(N)) ** 2)  # noqa: E731
    assert np.isfinite(float(eqx.filter_jit(loss)(jnp.asarray(b1), "raise")))
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"conjugate-gradient solve stopped"):
        jax.block_until_ready(eqx.filter_jit(jax.grad(loss))(jnp.asarray(b1), "raise"))
    assert np.all(np.isnan(np.asarray(eqx.filter_jit(jax.grad(loss))(jnp.asarray(b1), "nan"))))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.complex64])
def test_unrolled_solve_past_convergence_has_finite_exact_gradients(rng, dtype):
    # two distinct eigenvalues: CG is exact after two steps; the 38 steps after it must neither
    # move nor poison the reverse pass (unguarded, they divided rounding noise by rounding noise)
    Q = np.linalg.qr(rng.standard_normal((N, N)))[0]
    evals = np.where(np.arange(N) < 4, 1.0, 3.0)
    H = (Q * evals) @ Q.T
    b = rng.standard_normal(N)
    c = rng.standard_normal(N)
    Hj, bj = jnp.asarray(H, dtype), jnp.asarray(b, dtype)

    def loss(lam):
        x, _ = linear.cg(lambda v: Hj @ v + lam * v, bj, tol=1e-6, max_iters=40, unroll=True)
        return jnp.real(jnp.vdot(jnp.asarray(c, dtype), x))

    g = float(jax.jit(jax.grad(loss))(jnp.float32(0.5)))
    Hl = H + 0.5 * np.eye(N)
    exact = -c @ np.linalg.solve(Hl, np.linalg.solve(Hl, b))
    assert np.isfinite(g) and g == pytest.approx(exact, rel=1e-4)
