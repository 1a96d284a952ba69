"""Derivative policies (adjoint=): the unrolled ADMM whose inner CG has converged (it returned
NaN gradients), unrolling that stops at convergence differentiated against central differences
and a closed form, the diff= and adjoint_*= shorthands, and their errors."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import invjax as ij
from tests.conftest import x64_enabled

N = 8


def _inpainting(dtype):
    rng = np.random.default_rng(0)
    x_true = rng.random((N, N))
    mask = rng.random((N, N)) < 0.7
    y = mask * (x_true + 0.05 * rng.standard_normal((N, N)))
    A = ij.operators.Mask(jnp.asarray(mask, dtype))
    return A, jnp.asarray(y, dtype), jnp.asarray(x_true, dtype)


def _admm_loss(dtype, cg_iters, **solver):
    A, y, x_true = _inpainting(dtype)
    settings = dict(diff="unroll", max_iters=20, tol=0.0, rho=1.0, adapt_iters=0, cg_iters=cg_iters) | solver

    def loss(w):
        problem = ij.Problem(op=A, data=y, regularizer=ij.functionals.TV(), weight=w)
        sol = ij.solve(problem, ij.solvers.ADMM(**settings))
        return jnp.sum((sol.x - x_true) ** 2), sol.stats

    return loss


def _central_difference(cg_iters, w, h=1e-5, **solver):
    with x64_enabled():
        f = jax.jit(lambda v: _admm_loss(jnp.float64, cg_iters, **solver)(v)[0])
        return float((f(jnp.float64(w + h)) - f(jnp.float64(w - h))) / (2 * h))


@pytest.mark.parametrize("cg_iters", [3, 60])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["float32", "float64"])
def test_unrolled_admm_gradient_after_inner_cg_converged(dtype, cg_iters):
    # 8x8 inpainting, 70 % observed, TV: the x-step's CG is exact well before 60 iterations; the
    # steps after it used to divide rounding noise by rounding noise and the gradient was NaN
    w = 0.1
    with x64_enabled(dtype == jnp.float64):
        g = float(jax.jit(jax.grad(lambda v: _admm_loss(dtype, cg_iters)(v)[0]))(jnp.asarray(w, dtype)))
    fd = _central_difference(cg_iters, w)
    assert np.isfinite(g)
    assert g == pytest.approx(fd, rel=2e-3 if dtype == jnp.float32 else 1e-5)


def _tikhonov(dtype):
    rng = np.random.default_rng(1)
    psf = ij.operators.gaussian_psf(3, 0.8)
    A = ij.operators.Convolution(jnp.asarray(psf, dtype), (N, N))
    x_true = jnp.asarray(rng.random((N, N)), dtype)
    y = A(x_true) + 0.02 * jnp.asarray(rng.standard_normal((N, N)), dtype)
    return A, y, x_true


def test_unroll_stops_at_convergence_and_its_gradient_is_exact(x64):
    # CG on Tikhonov deblurring converges long before max_iters; the blocks after it are skipped.
    # The gradient through the iterations actually run equals the closed form of the exact
    # solution's derivative, dx/dw = -(A^T A + w I)^-1 x, and central differences
    A, y, x_true = _tikhonov(jnp.float64)
    solver = ij.solvers.CG(max_iters=400, tol=1e-12, adjoint=ij.solvers.UnrollAdjoint(checkpoints=5))

    def loss(w):
        sol = ij.solve(ij.Problem(A, y, ij.functionals.SquaredL2(), w), solver)
        return jnp.sum((sol.x - x_true) ** 2), sol.stats

    w = 0.05
    (value, stats), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(jnp.float64(w))
    assert bool(stats.converged) and int(stats.iterations) < 100
    M = np.asarray(A.as_matrix())
    H = M.T @ M + w * np.eye(N * N)
    x = np.linalg.solve(H, M.T @ np.asarray(y).ravel())
    exact = 2 * (x - np.asarray(x_true).ravel()) @ -np.linalg.solve(H, x)
    f = jax.jit(lambda v: loss(v)[0])
    h = 1e-6
    fd = float((f(w + h) - f(w - h)) / (2 * h))
    assert float(g) == pytest.approx(exact, rel=1e-6)
    assert float(g) == pytest.approx(fd, rel=1e-5)
    # forward mode through the same stopped loop
    _, t = jax.jvp(lambda v: loss(v)[0], (jnp.float64(w),), (jnp.float64(1.0),))
    assert float(t) == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["float32", "float64"])
def test_unrolled_admm_that_converges_early_has_a_finite_exact_gradient(dtype):
    # tol > 0: ADMM stops before max_iters and the remaining blocks are frozen; their derivative
    # is the identity (finite), and the gradient matches central differences of the float64 solve
    w = 0.1
    solver = dict(tol=1e-7 if dtype == jnp.float64 else 1e-5, max_iters=2000, cg_iters=20)
    with x64_enabled(dtype == jnp.float64):
        (_, stats), g = jax.jit(jax.value_and_grad(_admm_loss(dtype, **solver), has_aux=True))(jnp.asarray(w, dtype))
    assert bool(stats.converged) and int(stats.iterations) < 2000
    fd = _central_difference(w=w, h=1e-6, **solver)
    assert np.isfinite(float(g))
    assert float(g) == pytest.approx(fd, rel=5e-3 if dtype == jnp.float32 else 1e-4)


def test_checkpoint_counts_give_the_same_gradient():
    A, y, x_true = _tikhonov(jnp.float32)

    def grad(adjoint):
        solver = ij.solvers.CG(max_iters=60, tol=1e-5, adjoint=adjoint)
        loss = lambda w: jnp.sum((ij.solve(ij.Problem(A, y, ij.functionals.SquaredL2(), w), solver).x - x_true) ** 2)  # noqa: E731
        return float(jax.jit(jax.grad(loss))(jnp.float32(0.05)))

    reference = grad(ij.solvers.UnrollAdjoint(checkpoints=1000))  # every block stored
    for checkpoints in (1, 4, None):
        assert grad(ij.solvers.UnrollAdjoint(checkpoints=checkpoints)) == pytest.approx(reference, rel=1e-5)


def test_diff_and_legacy_keywords_build_the_adjoint():
    assert ij.solvers.ADMM().adjoint == ij.solvers.ImplicitAdjoint() and ij.solvers.ADMM().diff == "implicit"
    unrolled = ij.solvers.ADMM(diff="unroll")
    assert unrolled.adjoint == ij.solvers.UnrollAdjoint() and unrolled.diff == "unroll"
    assert ij.solvers.PDHG(adjoint=ij.solvers.UnrollAdjoint(checkpoints=3)).diff == "unroll"
    # an adjoint of the named kind is kept
    kept = ij.solvers.FISTA(diff="unroll", adjoint=ij.solvers.UnrollAdjoint(checkpoints=3))
    assert kept.adjoint.checkpoints == 3
    tuned = ij.solvers.PDHG(adjoint_tol=1e-3, adjoint_iters=50, adjoint_failure="nan", adjoint_flat=2.0, adjoint_curvature_cap=10.0)
    assert tuned.adjoint == ij.solvers.ImplicitAdjoint(tol=1e-3, max_iters=50, failure="nan", flat=2.0, curvature_cap=10.0)
    # dataclasses.replace passes a shorthand afresh: it switches or adjusts the stored adjoint
    assert dataclasses.replace(tuned, adjoint_failure="raise").adjoint.failure == "raise"
    assert dataclasses.replace(tuned, adjoint_failure="raise").adjoint.tol == 1e-3
    assert dataclasses.replace(tuned, diff="unroll").adjoint == ij.solvers.UnrollAdjoint()
    assert dataclasses.replace(unrolled, adjoint=ij.solvers.ImplicitAdjoint()).diff == "implicit"
    assert dataclasses.replace(unrolled, max_iters=10).diff == "unroll"
    # checkpoint=k (iterations per segment) becomes a number of checkpoints
    assert ij.solvers.FISTA(diff="unroll", max_iters=100, check_every=10, checkpoint=20).adjoint.checkpoints == 5
    assert ij.solvers.FISTA(diff="unroll", max_iters=100, checkpoint=0).adjoint.checkpoints == 10
    assert ij.ImplicitAdjoint is ij.solvers.ImplicitAdjoint and ij.UnrollAdjoint is ij.solvers.UnrollAdjoint


def test_adjoint_errors():
    with pytest.raises(TypeError, match=r"ADMM: `adjoint` must be ij.solvers.ImplicitAdjoint\(...\) or ij.solvers.UnrollAdjoint"):
        ij.solvers.ADMM(adjoint="implicit")
    with pytest.raises(ValueError, match=r"ADMM: `diff` must be one of \('implicit', 'unroll'\), got 'backprop'"):
        ij.solvers.ADMM(diff="backprop")
    with pytest.raises(ValueError, match=r"ImplicitAdjoint: `failure` \(adjoint_failure\) must be one of"):
        ij.solvers.PDHG(adjoint_failure="warn")
    with pytest.raises(ValueError, match=r"ImplicitAdjoint: `tol` \(adjoint_tol\) must be None or a number in \(0, 1\)"):
        ij.solvers.ImplicitAdjoint(tol=2.0)
    with pytest.raises(ValueError, match=r"UnrollAdjoint: `checkpoints` must be None or an int >= 1, got 0"):
        ij.solvers.UnrollAdjoint(checkpoints=0)
    with pytest.raises(ValueError, match=r"FISTA: `checkpoint` must be None or an int >= 0, got -1"):
        ij.solvers.FISTA(diff="unroll", checkpoint=-1)
