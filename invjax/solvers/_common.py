"""Pieces shared by several solvers: smooth gradients, Lipschitz bounds, inner CG."""

import jax
import jax.numpy as jnp

from ..functionals import Scaled, SquaredL2
from .problem import Problem


def is_quadratic(f) -> bool:
    """Whether ``f`` is a (scaled, weighted) squared distance, i.e. has an affine gradient."""
    while isinstance(f, Scaled):
        f = f.functional
    return isinstance(f, SquaredL2)


def smooth_regularizer(problem: Problem) -> bool:
    """Whether ``weight * R`` is smooth (gradient steps apply); ``False`` without one."""
    split = problem.split_regularizer()
    return split is not None and split[1].smooth


def smooth_grad(problem: Problem, x, with_regularizer: bool):
    """Gradient of ``F(A x; y)`` (and of ``weight * R(x)`` when smooth and asked for)."""
    g = problem.op.rmv(problem.data_fidelity.grad(problem.op.mv(x)))
    if with_regularizer:
        K, inner = problem.split_regularizer()
        g = g + K.rmv(inner.grad(K.mv(x)))
    return g


def _real(x):
    return jnp.finfo(jnp.asarray(x).dtype).dtype


def smooth_lipschitz(problem: Problem, with_regularizer: bool, key=None, norm_iters: int = 50):
    """Upper estimate of the Lipschitz constant of :func:`smooth_grad`: ``L_F ||A||² (+ L_g ||K||²)``.

    Operator norms come from power iteration (slightly under the true norm), so the result is
    inflated by 1%.
    """
    fid = problem.data_fidelity
    if fid.lipschitz is None:
        raise TypeError(f"the fidelity {type(fid).__name__} has no known Lipschitz constant")
    lip = jnp.asarray(fid.lipschitz) * problem.op.norm(key, norm_iters) ** 2
    if with_regularizer:
        K, inner = problem.split_regularizer()
        if inner.lipschitz is None:
            raise TypeError(f"the regulariser {type(inner).__name__} has no known Lipschitz constant")
        lip = lip + jnp.asarray(inner.lipschitz) * K.norm(key, norm_iters) ** 2
    return 1.01 * lip


def cg_step(matvec, state):
    """One conjugate-gradient step for ``H x = b`` (``H`` Hermitian positive definite).

    ``state = (x, r, p, rr)`` with ``r = b - H x`` and ``rr = ||r||²``.
    """
    x, r, p, rr = state
    hp = matvec(p)
    php = jnp.real(jnp.vdot(p, hp))
    alpha = jnp.where(php > 0, rr / jnp.where(php > 0, php, 1), 0).astype(rr.dtype)
    x = x + alpha * p
    r = r - alpha * hp
    rr_new = jnp.real(jnp.vdot(r, r))
    beta = jnp.where(rr > 0, rr_new / jnp.where(rr > 0, rr, 1), 0).astype(rr.dtype)
    return x, r, r + beta * p, rr_new


def cg_start(matvec, b, x0):
    r = b - matvec(x0)
    return x0, r, r, jnp.real(jnp.vdot(r, r))


def pcg(matvec, b, x0=None, precondition=None, rtol=1e-6, max_iters=100, fixed=False, reduction=None):
    """Preconditioned conjugate gradients for ``H x = b``, ``H`` Hermitian positive
    semi-definite (real inner product ``Re <., .>``, so complex arrays work).

    Args:
        matvec: ``v -> H v``.
        b: right-hand side.
        x0: start (default 0).
        precondition: ``r -> M^{-1} r`` with ``M`` Hermitian positive definite (default identity).
        rtol: stop when ``||b - H x|| <= rtol ||b||``...
        reduction: ...or (if given) when ``||b - H x|| <= reduction ||b - H x0||`` (for warm
            starts inside an outer iteration: every call makes progress).
        max_iters: iteration limit.
        fixed: run exactly ``max_iters`` iterations in a ``fori_loop`` (reverse-mode
            differentiable) instead of a tolerance loop.

    Returns:
        ``(x, relative residual, iterations)``.
    """
    precondition = (lambda r: r) if precondition is None else precondition
    x = jnp.zeros_like(b) if x0 is None else x0
    r = b - matvec(x) if x0 is not None else b
    real = jnp.finfo(b.dtype).dtype
    bnorm = jnp.sqrt(jnp.real(jnp.vdot(b, b)))
    z = precondition(r)
    rz = jnp.real(jnp.vdot(r, z))

    def body(c):
        k, x, r, p, rz, _ = c
        q = matvec(p)
        pq = jnp.real(jnp.vdot(p, q))
        alpha = jnp.where(pq > 0, rz / jnp.where(pq > 0, pq, 1), 0).astype(real)
        x = x + alpha * p
        r = r - alpha * q
        z = precondition(r)
        rz_new = jnp.real(jnp.vdot(r, z))
        beta = jnp.where(rz > 0, rz_new / jnp.where(rz > 0, rz, 1), 0).astype(real)
        return k + 1, x, r, z + beta * p, rz_new, jnp.sqrt(jnp.real(jnp.vdot(r, r)))

    r0norm = jnp.sqrt(jnp.real(jnp.vdot(r, r)))
    target = rtol * bnorm if reduction is None else jnp.maximum(rtol * bnorm, reduction * r0norm)

    def cond(c):
        return (c[0] < max_iters) & (c[5] > target)

    carry = (jnp.zeros((), jnp.int32), x, r, z, rz, r0norm)
    if fixed:
        carry = jax.lax.fori_loop(0, max_iters, lambda _, c: body(c), carry)
    else:
        carry = jax.lax.while_loop(cond, body, carry)
    k, x, _, _, _, rnorm = carry
    rel = jnp.where(bnorm > 0, rnorm / jnp.where(bnorm > 0, bnorm, 1), 0)
    return x, rel, k


def cg_fixed(matvec, b, x0, iters: int):
    """``iters`` CG steps on ``H x = b`` from ``x0`` (fixed count: scan-friendly)."""
    state = cg_start(matvec, b, x0)
    state = jax.lax.fori_loop(0, iters, lambda _, s: cg_step(matvec, s), state)
    return state[0]


def stacked_norm(ops, key=None, iters: int = 50):
    """``||[K_1; K_2; ...]||``: exact from the Fourier symbols when every ``K_i`` is circulant,
    else by power iteration on ``sum_i K_i^H K_i``."""
    symbols = [K.fourier_symbol() for K in ops]
    if all(s is not None for s in symbols):
        return jnp.sqrt(jnp.max(sum(jnp.sum(jnp.abs(s) ** 2, axis=0) for s in symbols)))
    key = jax.random.PRNGKey(0) if key is None else key
    shape, dtype = ops[0].in_shape, ops[0].dtype
    v = jax.random.normal(key, shape, jnp.finfo(dtype).dtype).astype(dtype)
    v = v / jnp.linalg.norm(v)

    def body(_, carry):
        v, _ = carry
        w = sum(K.rmv(K.mv(v)) for K in ops)
        n = jnp.linalg.norm(w)
        return w / jnp.where(n > 0, n, 1), n

    _, lam = jax.lax.fori_loop(0, iters, body, (v, jnp.zeros((), jnp.finfo(dtype).dtype)))
    return jnp.sqrt(lam)


def ratio(num, den):
    """``num / den`` for residual tests; ``1`` (not converged) when ``den == 0 < num``."""
    safe = jnp.where(den > 0, den, 1)
    return jnp.where(den > 0, num / safe, jnp.where(num > 0, 1.0, 0.0)).astype(num.dtype)
