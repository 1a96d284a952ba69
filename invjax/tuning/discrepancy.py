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
:math:`|\varphi| \le \log(1 + \text{tol})`. Each evaluation is one lower-level solve; all of it
is ``lax`` control flow, so the rule jits and vmaps over a batch of images.

With :math:`\tau = 1` the principle is known to over-smooth slightly; :math:`\tau` a little
above 1 is the classical safeguard when :math:`\sigma` is only estimated.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from typing import Any, Callable

from jaxtyping import Array, Float, Inexact

from ..solvers import IterativeSolver, Problem, solve
from ._common import (
    RuleResult,
    as_data,
    check_bounds,
    check_count,
    check_make_problem,
    check_sigma,
    check_solver,
    fail_if_nothing_evaluated,
    keyword_only,
    real_dtype,
    solution_like,
    warn_if_unconverged,
)

_EXPAND = math.log(100.0)


@keyword_only(
    "tuning.discrepancy", 3, "discrepancy(make_problem, y, sigma, solver=..., bounds=..., tol=..., max_iters=...)",
    renamed={"rtol": "tol", "maxiter": "max_iters"},
)
def discrepancy(
    make_problem: Callable[[Any, Inexact[Array, "*out"]], Problem],
    y: Inexact[Array, "*out"],
    sigma: float | Float[Array, ""],
    *,
    solver: IterativeSolver,
    tau: float = 1.0,
    bounds: tuple[float, float] = (1e-6, 1e2),
    tol: float = 1e-3,
    max_iters: int = 30,
    expand: int = 4,
) -> RuleResult:
    r"""Weight by the discrepancy principle for one image (``jax.vmap`` it over a batch).

    Finds :math:`\lambda` with :math:`\|A\hat x(\lambda) - y\|^2 = \tau m \sigma^2` (see the
    module docstring), ``m = op.n_measurements``.

    Arguments:
        make_problem: ``(weight, y) -> Problem``; ``weight`` is a positive scalar.
        y: measurements, ``op.out_shape``, real or complex.
        sigma: absolute noise standard deviation, a positive scalar (traced values are checked
            at run time).
        solver: any invjax solver (keyword-only).
        tau: safety factor ``tau > 0`` of the target ``tau m sigma^2`` (default 1), with ``m``
            the measured entries (``op.n_measurements``, not ``y.size`` on masked data).
        bounds: initial bracket ``(low, high)`` of weights (default ``(1e-6, 1e2)``), pushed
            out by factors of 100 up to ``expand`` times if it does not contain the root.
        tol: stop when ``| ||A x - y||^2 / (tau m sigma^2) - 1 | <= tol`` (default ``1e-3``).
        max_iters: cap on regula-falsi iterations (default 30).
        expand: cap on bracket expansions (default 4).

    Returns:
        A :class:`RuleResult`: ``value`` the residual ratio reached, ``x`` the reconstruction at
        the weight, ``at_bound`` when no root was bracketed and an end was returned, ``solves``
        the solves spent (``weights``/``values`` are ``None``: the root search keeps only its
        best point).

    Raises:
        TypeError: ``solver`` is not an invjax solver, ``make_problem`` does not return a
            ``Problem``, or the call uses the old positional form.
        ValueError: ``sigma`` not finite and ``> 0``, bad ``bounds``/``tau``/``tol``/``max_iters``,
            or ``y`` not of the operator's ``out_shape``.

    Example:
        >>> import jax, jax.numpy as jnp, invjax as ij
        >>> A = ij.operators.Convolution(ij.operators.gaussian_psf(3, 1.0), (8, 8))
        >>> y = A(jnp.ones((8, 8))) + 0.1 * jax.random.normal(jax.random.key(0), (8, 8))
        >>> make = lambda w, y: ij.Problem(A, y, ij.functionals.SquaredL2(), w)
        >>> res = ij.tuning.discrepancy(make, y, 0.1, solver=ij.solvers.CG(max_iters=50, tol=1e-5))
        >>> bool(res.weight > 0), abs(float(res.value) - 1) < 1e-2
        (True, True)
    """
    who = "tuning.discrepancy"
    check_solver(solver, who)
    y = as_data(y, who)
    lo, hi = check_bounds(bounds, who)
    max_iters = check_count(max_iters, "max_iters", who)
    expand = check_count(expand, "expand", who, minimum=0)
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise ValueError(f"{who}: `tau` must be a finite number > 0, got {tau!r}")
    if not (isinstance(tol, (int, float)) and 0 < tol < 1):
        raise ValueError(f"{who}: `tol` must be in (0, 1), got {tol!r}")
    rdt = real_dtype(y)
    problem = check_make_problem(make_problem, jnp.ones((), rdt), y, who)
    if tuple(y.shape) != tuple(problem.op.out_shape):
        raise ValueError(
            f"{who}: `y` must have the operator's out_shape {tuple(problem.op.out_shape)}, got {tuple(y.shape)} "
            "(for a batch, jax.vmap the rule)"
        )
    sigma = check_sigma(sigma, y, who)
    result = _discrepancy(make_problem, solver, y, sigma, float(tau), lo, hi, float(tol), max_iters, expand)
    warn_if_unconverged(result, who)
    return result


@eqx.filter_jit
def _discrepancy(make_problem, solver, y, sigma, tau, lo, hi, tol, max_iters, expand):
    rdt = real_dtype(y)
    m = make_problem(jnp.ones((), rdt), y).op.n_measurements  # a mask's unobserved zeros do not count
    log_target = jnp.log(tau * jnp.asarray(m, rdt) * sigma**2)
    ftol = jnp.asarray(math.log1p(tol), rdt)

    def phi(t):
        problem = make_problem(jnp.exp(t).astype(rdt), y)
        sol = solve(problem, solver)
        r = problem.op.mv(sol.x) - y
        return (jnp.log(jnp.sum(jnp.abs(r) ** 2)) - log_target).astype(rdt), sol.stats.converged, sol.x, sol.stats.iterations

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
            & (c["iters"] < max_iters)
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
        f, conv, x, its = phi(t)
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
        # the reconstruction and iteration count follow their ends exactly as the flags do
        def follow(v, va, vb):
            va_new = jnp.where(k == 0, v, va)
            vb_new = jnp.where(k == 1, v, vb)
            va_new = jnp.where(grow, jnp.where(low, v, vb), va_new)
            vb_new = jnp.where(grow, jnp.where(low, va, v), vb_new)
            return jnp.where(refine & neg, v, va_new), jnp.where(refine & ~neg, v, vb_new)

        xa_new, xb_new = follow(x, c["xa"], c["xb"])
        ia_new, ib_new = follow(its, c["ia"], c["ib"])
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
            # the reconstruction at each end and at the best point (the rule may return any)
            xa=xa_new,
            xb=xb_new,
            x_best=jnp.where(closer, x, c["x_best"]),
            ia=ia_new,
            ib=ib_new,
            i_best=jnp.where(closer, its, c["i_best"]),
        )

    zero_i = jnp.zeros((), jnp.int32)
    shape = solution_like(make_problem(jnp.ones((), rdt), y))
    x_zero = jnp.zeros(shape.shape, shape.dtype)
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
        xa=x_zero,
        xb=x_zero,
        x_best=x_zero,
        ia=zero_i,
        ib=zero_i,
        i_best=zero_i,
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
    low = c["fa"] > 0
    conv = jnp.where(ok, c["c_best"], jnp.where(low, c["ca"], c["cb"]))
    x = jnp.where(ok, c["x_best"], jnp.where(low, c["xa"], c["xb"]))
    its = jnp.where(ok, c["i_best"], jnp.where(low, c["ia"], c["ib"]))
    return RuleResult(weight=jnp.exp(t), value=jnp.exp(f), x=x, iterations=its.astype(jnp.int32), converged=conv,
                      at_bound=~ok, solves=c["k"])
