r"""Morozov's discrepancy principle: the weight whose residual matches the noise.

For measurements :math:`y = A x + n` with white noise of standard deviation :math:`\sigma` on the
:math:`m` measured entries (:math:`\mathbb E\|n\|^2 = m \sigma^2`, ``m = op.n_measurements``:
``y.size`` for most operators, the observed entries of a :class:`~invjax.operators.Mask`, the
sampled k-space entries times the coils of :class:`~invjax.operators.CartesianMRI`, whose
unobserved entries are zeros of ``y``), choose :math:`\lambda` with

.. math:: \|A \hat x(\lambda) - y\|^2 = \tau\, m\, \sigma^2 ,

(Morozov, "On the solution of functional equations by the method of regularization", Soviet
Math. Dokl. 7, 1966). The residual grows with :math:`\lambda` for convex regularisers, so the
root is found on :math:`t = \log\lambda` by bracketing: the ends of ``bounds`` are pushed out
by factors of 100 (up to ``expand`` times) until they straddle the root, then the Illinois
variant of regula falsi (Dowell & Jarratt, BIT 11, 1971) runs on
:math:`\varphi(t) = \log\|A\hat x(e^t) - y\|^2 - \log(\tau m \sigma^2)` until
:math:`|\varphi| \le \log(1 + \text{rtol})`. Each evaluation is one lower-level solve; all of it
is ``lax`` control flow, so the rule jits and vmaps over a batch of images.

With :math:`\tau = 1` the principle is known to over-smooth slightly; :math:`\tau` a little
above 1 is the classical safeguard when :math:`\sigma` is only estimated.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from ..solvers import solve
from ._common import (
    RuleInfo,
    as_data,
    check_bounds,
    check_count,
    check_make_problem,
    check_sigma,
    check_solver,
    fail_if_nothing_evaluated,
    real_dtype,
    warn_if_unconverged,
)

_EXPAND = math.log(100.0)


def discrepancy(
    make_problem,
    y,
    sigma,
    solver,
    *,
    tau: float = 1.0,
    bounds=(1e-6, 1e2),
    rtol: float = 1e-3,
    maxiter: int = 30,
    expand: int = 4,
    return_info: bool = False,
):
    """Weight by the discrepancy principle for one image (``jax.vmap`` it over a batch).

    Args:
        make_problem: ``(weight, y) -> Problem``; ``weight`` is a positive scalar.
        y: measurements, ``op.out_shape``.
        sigma: noise standard deviation, a positive scalar (``ValueError`` otherwise; traced
            values are checked at run time).
        solver: any invjax solver.
        tau: safety factor ``tau > 0`` of the target ``tau m sigma^2`` (default 1), with ``m``
            the measured entries (``op.n_measurements``, not ``y.size`` on masked data).
        bounds: initial bracket ``(low, high)`` of weights (default ``(1e-6, 1e2)``), pushed
            out by factors of 100 up to ``expand`` times if it does not contain the root.
        rtol: stop when ``| ||A x - y||^2 / (tau m sigma^2) - 1 | <= rtol`` (default ``1e-3``).
        maxiter: cap on regula-falsi iterations (default 30).
        expand: cap on bracket expansions (default 4).
        return_info: also return a :class:`RuleInfo` (``value``: the residual ratio reached;
            ``at_bound``: no root was bracketed and an end was returned).

    Returns:
        The weight (a scalar), or ``(weight, info)``.

    Example:
        >>> make = lambda w, y: ij.Problem(A, y, ij.functionals.TV(), w)
        >>> w = ij.tuning.discrepancy(make, y, 0.01, ij.solvers.ADMM(max_iters=300, tol=1e-3))
        >>> ws = jax.vmap(lambda y: ij.tuning.discrepancy(make, y, 0.01, solver))(ys)
    """
    who = "tuning.discrepancy"
    check_solver(solver, who)
    y = as_data(y, who)
    lo, hi = check_bounds(bounds, who)
    maxiter = check_count(maxiter, "maxiter", who)
    expand = check_count(expand, "expand", who, minimum=0)
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise ValueError(f"{who}: `tau` must be a finite number > 0, got {tau!r}")
    if not (isinstance(rtol, (int, float)) and 0 < rtol < 1):
        raise ValueError(f"{who}: `rtol` must be in (0, 1), got {rtol!r}")
    rdt = real_dtype(y)
    problem = check_make_problem(make_problem, jnp.ones((), rdt), y, who)
    if tuple(y.shape) != tuple(problem.op.out_shape):
        raise ValueError(
            f"{who}: `y` must have the operator's out_shape {tuple(problem.op.out_shape)}, got {tuple(y.shape)} "
            "(for a batch, jax.vmap the rule)"
        )
    sigma = check_sigma(sigma, y, who)
    info = _discrepancy(make_problem, solver, y, sigma, float(tau), lo, hi, float(rtol), maxiter, expand)
    warn_if_unconverged(info, who)
    return (info.weight, info) if return_info else info.weight


@eqx.filter_jit
def _discrepancy(make_problem, solver, y, sigma, tau, lo, hi, rtol, maxiter, expand):
    rdt = real_dtype(y)
    m = make_problem(jnp.ones((), rdt), y).op.n_measurements  # a mask's unobserved zeros do not count
    log_target = jnp.log(tau * jnp.asarray(m, rdt) * sigma**2)
    ftol = jnp.asarray(math.log1p(rtol), rdt)

    def phi(t):
        problem = make_problem(jnp.exp(t).astype(rdt), y)
        sol = solve(problem, solver)
        r = problem.op.mv(sol.x) - y
        return (jnp.log(jnp.sum(jnp.abs(r) ** 2)) - log_target).astype(rdt), sol.stats.converged

    # One while_loop, one trace of the solve: evaluations 0 and 1 are the ends of `bounds`; then
    # the bracket is pushed out by factors of 100 while phi(a) > 0 or phi(b) < 0 (at most
    # `expand` times); then Illinois regula falsi keeps phi(a) <= 0 <= phi(b).
    def bracketed(c):
        return (c["fa"] <= 0) & (c["fb"] >= 0)

    def growing(c):
        return (c["k"] >= 2) & ~bracketed(c) & (c["grown"] < expand)

    def refining(c):
        return (
            (c["k"] >= 2)
            & bracketed(c)
            & (jnp.abs(c["f_best"]) > ftol)
            & (c["iters"] < maxiter)
            & (c["b"] - c["a"] > 1e-6)
        )

    def cond(c):
        return (c["k"] < 2) | growing(c) | refining(c)

    def body(c):
        k, a, fa, b, fb = c["k"], c["a"], c["fa"], c["b"], c["fb"]
        grow, refine = growing(c), refining(c)
        low = fa > 0  # even the smallest weight leaves too large a residual: go lower
        t_grow = jnp.where(low, a - _EXPAND, b + _EXPAND)
        denom = fb - fa
        t_rf = jnp.where(denom > 0, (a * fb - b * fa) / jnp.where(denom > 0, denom, 1), 0.5 * (a + b))
        width = b - a
        t_rf = jnp.clip(t_rf, a + 1e-3 * width, b - 1e-3 * width)
        t = jnp.where(k == 0, a, jnp.where(k == 1, b, jnp.where(grow, t_grow, t_rf)))
        f, conv = phi(t)
        ca, cb = c["ca"], c["cb"]  # whether the solve at each end converged
        # ends of bounds
        fa_new = jnp.where(k == 0, f, fa)
        fb_new = jnp.where(k == 1, f, fb)
        ca_new = jnp.where(k == 0, conv, ca)
        cb_new = jnp.where(k == 1, conv, cb)
        a_new, b_new = a, b
        # expansion: the old end becomes the other end of the new bracket
        a_new = jnp.where(grow, jnp.where(low, t, b), a_new)
        fa_new = jnp.where(grow, jnp.where(low, f, fb), fa_new)
        b_new = jnp.where(grow, jnp.where(low, a, t), b_new)
        fb_new = jnp.where(grow, jnp.where(low, fa, f), fb_new)
        ca_new = jnp.where(grow, jnp.where(low, conv, cb), ca_new)
        cb_new = jnp.where(grow, jnp.where(low, ca, conv), cb_new)
        # Illinois: halve the stored value at an end kept twice in a row
        neg = f < 0
        side = c["side"]
        a_new = jnp.where(refine & neg, t, a_new)
        fa_new = jnp.where(refine, jnp.where(neg, f, jnp.where(side == 1, 0.5 * fa, fa)), fa_new)
        b_new = jnp.where(refine & ~neg, t, b_new)
        ca_new = jnp.where(refine & neg, conv, ca_new)
        cb_new = jnp.where(refine & ~neg, conv, cb_new)
        fb_new = jnp.where(refine, jnp.where(neg, jnp.where(side == -1, 0.5 * fb, fb), f), fb_new)
        side = jnp.where(refine, jnp.where(neg, -1, 1), side).astype(jnp.int32)
        closer = jnp.abs(f) < jnp.abs(c["f_best"])
        return dict(
            k=k + 1,
            a=a_new,
            fa=fa_new,
            b=b_new,
            fb=fb_new,
            side=side,
            grown=c["grown"] + grow.astype(jnp.int32),
            iters=c["iters"] + refine.astype(jnp.int32),
            t_best=jnp.where(closer, t, c["t_best"]),
            f_best=jnp.where(closer, f, c["f_best"]),
            ca=ca_new,
            cb=cb_new,
            c_best=jnp.where(closer, conv, c["c_best"]),
        )

    zero_i = jnp.zeros((), jnp.int32)
    init = dict(
        k=zero_i,
        a=jnp.asarray(math.log(lo), rdt),
        fa=jnp.asarray(jnp.inf, rdt),
        b=jnp.asarray(math.log(hi), rdt),
        fb=jnp.asarray(-jnp.inf, rdt),
        side=zero_i,
        grown=zero_i,
        iters=zero_i,
        t_best=jnp.asarray(math.log(lo), rdt),
        f_best=jnp.asarray(jnp.inf, rdt),
        ca=jnp.zeros((), bool),
        cb=jnp.zeros((), bool),
        c_best=jnp.zeros((), bool),
    )
    c = jax.lax.while_loop(cond, body, init)
    ok = bracketed(c)
    # unbracketed: the residual is above target for every weight (return the smallest) or below
    # it for every weight (return the largest)
    t = jnp.where(ok, c["t_best"], jnp.where(c["fa"] > 0, c["a"], c["b"]))
    # a NaN residual (a failed solve) never brackets or improves: if even the ends were NaN
    # nothing was evaluated
    t = fail_if_nothing_evaluated(t, jnp.where(jnp.isfinite(c["fa"]) | jnp.isfinite(c["fb"]) | jnp.isfinite(c["f_best"]), 0.0, jnp.nan), "tuning.discrepancy")
    f = jnp.where(ok, c["f_best"], jnp.where(c["fa"] > 0, c["fa"], c["fb"]))
    conv = jnp.where(ok, c["c_best"], jnp.where(c["fa"] > 0, c["ca"], c["cb"]))
    return RuleInfo(weight=jnp.exp(t), value=jnp.exp(f), solves=c["k"], at_bound=~ok, converged=conv)
