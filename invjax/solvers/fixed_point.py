r"""Fixed points ``x* = f(theta, x*)``: Anderson acceleration, and implicit derivatives through
the library's failure policy.

* :func:`anderson`: the fixed point of ``fn`` by Anderson-accelerated iteration (type II, Walker
  & Ni, SIAM J. Numer. Anal. 49(4), 2011) in one ``lax.while_loop``; no derivative rules.
* :func:`fixed_point`: the same forward solve, with the derivative of ``x*`` in ``theta`` from
  the implicit function theorem (Bai, Kolter & Koltun, NeurIPS 2019):

  .. math:: (I - \partial_x f)\, dx^\star = \partial_\theta f\, d\theta ,

  one linear solve per derivative, in forward mode (``jax.jvp``) and reverse mode (``jax.grad``,
  the transposed system ``(I - \partial_x f)^T u = g``), memory independent of the forward
  iterations. The linear system is not symmetric, so it is solved by ``lineax.GMRES`` (one
  Jacobian-vector or vector-Jacobian product of ``f`` per iteration) inside
  ``jax.lax.custom_linear_solve`` (which makes the solve transposable); its true residual is
  recomputed and judged by the one failure policy of :func:`invjax.solvers.linear.check_result`,
  as is the forward solve's: ``"raise"`` (``equinox.EquinoxRuntimeError`` naming the residual
  reached), ``"nan"`` or ``"ignore"``; the forward residual and iterations are always returned.

Example:
    >>> A = jnp.array([[0.5, 0.1], [0.0, 0.4]])
    >>> f = lambda b, x: A @ x + b
    >>> x, stats = ij.solvers.fixed_point(f, jnp.ones(2), jnp.zeros(2), tol=1e-6)
    >>> print(np.round(np.asarray(x), 4), bool(stats.converged))
    [2.3333 1.6667] True
"""

from __future__ import annotations

import functools
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PyTree

from .linear import LinearStats, check_result

__all__ = ["FixedPointStats", "anderson", "fixed_point"]

_FAILURES = ("raise", "nan", "ignore")
_RESTART = 20  # GMRES restart length of the derivative solves


class FixedPointStats(eqx.Module):
    """What a fixed-point solve reports (arrays; one entry per item under ``vmap``).

    Returned by :func:`fixed_point` (not built by hand).

    Arguments:
        iterations: updates of the iterate (int32; ``f`` was evaluated ``iterations + 1`` times).
        residual: ``||f(x) - x|| / ||x||`` at the returned ``x`` (``||f(x) - x||`` if ``x = 0``).
        converged: ``residual <= tol`` (``False`` for a non-finite residual).

    Example:
        >>> x, stats = ij.solvers.fixed_point(lambda p, x: 0.5 * x + p, 1.0, jnp.zeros(3), tol=1e-6)
        >>> bool(stats.converged), bool(jnp.allclose(x, 2.0, atol=1e-4))
        (True, True)
    """

    iterations: Int[Array, ""]
    residual: Float[Array, ""]
    converged: Bool[Array, ""]


def _relative_residual(x, fx):
    diff = jnp.linalg.norm((fx - x).ravel())
    scale = jnp.linalg.norm(x.ravel())
    return jnp.where(scale > 0, diff / jnp.where(scale > 0, scale, 1), diff)


def anderson(
    fn: Callable[[Array], Array],
    x0: Float[Array, "*shape"],
    *,
    memory: int = 5,
    max_iters: int = 100,
    tol: float = 1e-3,
    mixing: float = 1.0,
    regularization: float = 1e-4,
) -> tuple[Float[Array, "*shape"], Float[Array, ""], Int[Array, ""]]:
    r"""Fixed point of ``fn`` by Anderson-accelerated iteration (type II), in one ``while_loop``.

    With the last ``m`` iterates ``x_i`` and ``f_i = fn(x_i)``, ``G`` the ``m x n`` matrix of
    residuals ``f_i - x_i``, the weights are ``alpha = w / sum(w)`` with
    ``(G G^T + lambda I) w = 1`` (the minimiser of ``||G^T alpha||`` over ``sum alpha = 1``,
    regularised by ``lambda = regularization * max_i ||f_i - x_i||^2``), and the next iterate is
    ``mixing * sum_i alpha_i f_i + (1 - mixing) * sum_i alpha_i x_i``. Before ``m`` iterates exist
    the missing ones get weight 0. ``memory=1`` is the (damped) plain iteration. On a linear map
    with full memory it is equivalent to GMRES (Walker & Ni 2011). It is not differentiable in
    reverse mode (a ``while_loop``); :func:`fixed_point` adds implicit derivatives.

    Arguments:
        fn: ``x -> fn(x)``, an array of ``x0``'s shape and dtype.
        x0: the start.
        memory: ``m >= 1`` (static, default 5).
        max_iters: most updates (static, default 100).
        tol: stop when ``||fn(x) - x|| / ||x|| <= tol`` (default 1e-3).
        mixing: ``beta`` in ``(0, 1]`` (default 1).
        regularization: relative Tikhonov weight of the least-squares system (default 1e-4).

    Returns:
        ``(x, residual, iterations)``: the last iterate, its relative residual
        ``||fn(x) - x|| / ||x||`` and the number of updates (int32). A solve that stops at
        ``max_iters`` (or on a NaN residual) returns its last iterate: check ``residual``.

    Example:
        >>> x, res, k = ij.solvers.anderson(jnp.cos, jnp.zeros(()), tol=1e-6)
        >>> print(f"{float(x):.5f}", bool(res <= 1e-6))
        0.73909 True
    """
    x0 = jnp.asarray(x0)
    dtype = x0.dtype
    f0 = fn(x0)
    X = jnp.zeros((memory, x0.size), dtype).at[0].set(x0.ravel())
    F = jnp.zeros((memory, x0.size), dtype).at[0].set(f0.ravel())

    def cond(state):
        k, _, res, _, _ = state
        return (k < max_iters) & (res > tol)  # False for a NaN residual: a failed solve stops

    def body(state):
        k, _, _, X, F = state
        if memory == 1:
            alpha = jnp.ones((1,), dtype)
        else:
            valid = jnp.arange(memory) < jnp.minimum(k + 1, memory)
            G = (F - X) * valid[:, None].astype(dtype)
            H = G @ G.T
            scale = jnp.max(jnp.diag(H))
            lam = regularization * jnp.where(scale > 0, scale, 1)
            # missing entries: an identity row and a zero right-hand side give them weight 0
            H = H + jnp.diag(lam + (~valid).astype(dtype))
            w = jnp.linalg.solve(H, valid.astype(dtype))
            alpha = w / jnp.sum(w)
        x_new = mixing * (alpha @ F) + (1 - mixing) * (alpha @ X) if mixing != 1 else alpha @ F
        x_new = x_new.reshape(x0.shape).astype(dtype)
        f_new = fn(x_new)
        slot = (k + 1) % memory
        X = X.at[slot].set(x_new.ravel())
        F = F.at[slot].set(f_new.ravel())
        return k + 1, x_new, _relative_residual(x_new, f_new), X, F

    state = (jnp.asarray(0, jnp.int32), x0, _relative_residual(x0, f0), X, F)
    k, x, res, _, _ = jax.lax.while_loop(cond, body, state)
    return x, res, k


# ---- implicit derivatives ---------------------------------------------------------------------------
class _Settings(eqx.Module):
    """The static settings of :func:`fixed_point` (hashable)."""

    memory: int = eqx.field(static=True)
    max_iters: int = eqx.field(static=True)
    tol: float = eqx.field(static=True)
    mixing: float = eqx.field(static=True)
    regularization: float = eqx.field(static=True)
    adjoint_tol: float = eqx.field(static=True)
    adjoint_max_iters: int = eqx.field(static=True)
    failure: str = eqx.field(static=True)
    who: str = eqx.field(static=True)


def _two_norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.abs(t) ** 2) for t in jax.tree_util.tree_leaves(tree)))


def _gmres(matvec, b, settings: _Settings):
    """``A^{-1} b`` for ``A = matvec`` by ``lineax.GMRES`` until ``||b - A u|| <= tol ||b||``, with
    the true residual recomputed and the failure policy applied."""
    real = jnp.finfo(b.dtype).dtype
    bnorm = _two_norm(b)
    eps = float(jnp.finfo(real).eps)
    tol = max(settings.adjoint_tol, eps)
    # lineax stops when ||r / b_scale|| <= 1 and ||du / y_scale|| <= 1 with the scales atol +
    # rtol |.|: with rtol = 0, atol = 1 and the system (kappa A) u = b / t, t = tol ||b||, the
    # first test is ours in the two-norm and kappa = 1 / eps makes the second a no-op
    scale = jnp.where(bnorm > 0, tol * bnorm, 1).astype(real)
    kappa = 1 / eps
    struct = jax.ShapeDtypeStruct(b.shape, b.dtype)
    operator = lx.FunctionLinearOperator(lambda v: kappa * matvec(v), struct)
    # each of lineax's GMRES steps is a cycle of `restart` Arnoldi iterations (one matvec each)
    restart = min(_RESTART, b.size)
    cycles = -(-settings.adjoint_max_iters // restart)
    solver = lx.GMRES(rtol=0.0, atol=1.0, norm=_two_norm, max_steps=cycles, restart=restart, stagnation_iters=cycles)
    sol = lx.linear_solve(operator, (b / scale).astype(b.dtype), solver, throw=False)
    u = jnp.where(bnorm > 0, sol.value * (kappa * scale), 0).astype(b.dtype)
    iterations = (sol.stats["num_steps"] * restart).astype(jnp.int32)
    if settings.failure == "ignore":
        return u
    rnorm = _two_norm(b - matvec(u))
    res = jnp.where(bnorm > 0, rnorm / jnp.where(bnorm > 0, bnorm, 1), rnorm)
    stats = LinearStats(iterations, res, res <= tol)
    return check_result(u, stats, tol=tol, failure=settings.failure, messages=_messages(settings.who, "derivative"))


def _messages(who: str, what: str):
    if what == "forward":
        return lambda k: (f"{who}: the fixed-point iteration stopped at a relative residual of about 1e{k} (NaN: "
                          "1e2), above 10 * tol: raise max_iters or memory, loosen tol, or pass failure='ignore'")
    return lambda k: (f"{who}: the linear solve of the implicit derivative stopped at a relative residual of about "
                      f"1e{k} (NaN: 1e2), above 10 * its tolerance: raise its iteration limit, loosen its "
                      "tolerance, or pass failure='ignore'")


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _solve(fn, settings: _Settings, theta, x0):
    f = functools.partial(_apply, fn, theta)
    x, res, k = anderson(f, x0, memory=settings.memory, max_iters=settings.max_iters, tol=settings.tol,
                         mixing=settings.mixing, regularization=settings.regularization)
    x = check_result(x, LinearStats(k, res, res <= settings.tol), tol=settings.tol, failure=settings.failure,
                     messages=_messages(settings.who, "forward"))
    return x, res, k


def _apply(fn, theta, x):
    params, consts = theta
    return fn(params, x, *consts)


@_solve.defjvp
def _solve_jvp(fn, settings, primals, tangents):
    theta, x0 = primals
    dtheta, _ = tangents
    x, res, k = _solve(fn, settings, theta, x0)
    # d x* = (I - df/dx)^{-1} (df/dtheta) dtheta, the system linear (and transposable) in dtheta
    _, rhs = jax.jvp(lambda th: _apply(fn, th, x), (theta,), (dtheta,))
    _, jvp_x = jax.linearize(lambda xx: _apply(fn, theta, xx), x)

    def matvec(v):
        return v - jvp_x(v)

    dx = jax.lax.custom_linear_solve(matvec, rhs, solve=lambda mv, b: _gmres(mv, b, settings),
                                     transpose_solve=lambda vm, b: _gmres(vm, b, settings))
    return (x, res, k), (dx, jnp.zeros_like(res), np.zeros(jnp.shape(k), jax.dtypes.float0))


def fixed_point(
    fn: Callable[[PyTree, Array], Array],
    params: PyTree,
    x0: Float[Array, "*shape"],
    *,
    memory: int = 5,
    max_iters: int = 100,
    tol: float = 1e-3,
    mixing: float = 1.0,
    regularization: float = 1e-4,
    adjoint_tol: float | None = None,
    adjoint_max_iters: int | None = None,
    failure: str = "raise",
    who: str = "fixed_point",
) -> tuple[Float[Array, "*shape"], FixedPointStats]:
    r"""The fixed point ``x* = fn(params, x*)`` by :func:`anderson`, differentiable in ``params``
    by the implicit function theorem (forward and reverse mode; module docstring).

    ``fn`` should be a contraction in ``x`` (then the fixed point is unique and
    ``I - d fn / dx`` invertible). No derivative flows into ``x0``. Arrays that ``fn`` closes over
    are differentiated like ``params``.

    Arguments:
        fn: ``(params, x) -> x'``, of ``x0``'s shape and dtype.
        params: a pytree of arrays (what is differentiated).
        x0: the start.
        memory, max_iters, tol, mixing, regularization: the forward :func:`anderson` settings
            (defaults 5, 100, 1e-3, 1, 1e-4).
        adjoint_tol: relative residual of each derivative's linear solve (default ``tol``; at least
            the dtype's machine epsilon).
        adjoint_max_iters: its limit on Jacobian products (default ``max_iters``; GMRES restarts
            every 20 and counts whole cycles).
        failure: what a forward solve whose residual exceeds ``10 * tol``, or a derivative solve
            above ``10 * adjoint_tol``, does: ``"raise"`` (default; ``EquinoxRuntimeError`` at
            run time), ``"nan"`` (NaN result) or ``"ignore"`` (the last iterate; the returned
            statistics still say ``converged=False``).
        who: the name error messages start with.

    Returns:
        ``(x, FixedPointStats)``; the statistics are not differentiated.

    Raises:
        ValueError: bad settings (at trace time).
        equinox.EquinoxRuntimeError: with ``failure="raise"``, a solve that did not converge.

    Example:
        >>> f = lambda p, x: 0.5 * jnp.cos(x) + p
        >>> g = jax.grad(lambda p: ij.solvers.fixed_point(f, p, jnp.zeros(()), tol=1e-8)[0])(1.0)
        >>> x = ij.solvers.fixed_point(f, 1.0, jnp.zeros(()), tol=1e-8)[0]
        >>> print(f"{float(g):.5f} {float(1 / (1 + 0.5 * jnp.sin(x))):.5f}")
        0.68322 0.68322
    """
    from .._misc import positive_int, real_in

    memory = positive_int(memory, "memory", who)
    max_iters = positive_int(max_iters, "max_iters", who)
    tol = real_in(tol, "tol", who, 0.0, np.inf, low_open=False, high_open=True)
    mixing = real_in(mixing, "mixing", who, 0.0, 1.0)
    regularization = real_in(regularization, "regularization", who, 0.0, np.inf, low_open=False, high_open=True)
    adjoint_tol = tol if adjoint_tol is None else real_in(adjoint_tol, "adjoint_tol", who, 0.0, np.inf, low_open=False,
                                                          high_open=True)
    adjoint_max_iters = max_iters if adjoint_max_iters is None else positive_int(adjoint_max_iters, "adjoint_max_iters", who)
    if failure not in _FAILURES:
        raise ValueError(f"{who}: `failure` must be one of {_FAILURES}, got {failure!r}")
    settings = _Settings(memory, max_iters, tol, mixing, regularization, adjoint_tol, adjoint_max_iters, failure, who)
    x0 = jax.lax.stop_gradient(jnp.asarray(x0))
    # arrays fn closes over become arguments (a custom_jvp function must not close over tracers)
    converted, consts = jax.closure_convert(fn, params, x0)
    x, res, k = _solve(converted, settings, (params, tuple(consts)), x0)
    res = jax.lax.stop_gradient(res)
    return x, FixedPointStats(k, res, res <= tol)
