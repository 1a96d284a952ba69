"""Pieces shared by several solvers: smooth gradients, Lipschitz bounds, norms (linear solves: :mod:`.linear`)."""

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
