r"""The L-curve criterion: the corner of maximum curvature, kept for comparison.

The L-curve (Hansen, "Analysis of discrete ill-posed problems by means of the L-curve",
SIAM Review 34(4), 1992) plots, over :math:`t = \log\lambda`,

.. math:: \rho(t) = \log \|A \hat x_{e^t} - y\|^2, \qquad \eta(t) = \log R(\hat x_{e^t}),

and picks the corner, the point of maximum signed curvature

.. math:: \kappa = \frac{\rho' \eta'' - \rho'' \eta'}{(\rho'^2 + \eta'^2)^{3/2}} .

Here the curve is sampled on a grid of weights (all solves in one vmapped call), the
derivatives in ``t`` are second-order finite differences (``jnp.gradient``), and the maximum is
refined by a parabola through the three best samples. The criterion needs neither the noise
level nor the truth, but is known not to converge as the noise vanishes (Vogel 1996) and to
pick poorly when the curve has no sharp corner; it is here as a reference point.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from typing import Any, Callable

from jaxtyping import Array, Float, Inexact

from ..solvers import IterativeSolver, Problem, solve
from ._common import RuleResult, as_data, check_make_problem, check_solver, keyword_only, real_dtype, warn_if_unconverged


@keyword_only("tuning.lcurve", 2, "lcurve(make_problem, y, weights=..., solver=...)")
def lcurve(
    make_problem: Callable[[Any, Inexact[Array, "*out"]], Problem],
    y: Inexact[Array, "*out"],
    *,
    weights: Float[Array, " G"],
    solver: IterativeSolver,
) -> RuleResult:
    r"""Weight at the L-curve corner for one image (``jax.vmap`` it over a batch).

    The corner is the maximum of the curvature :math:`\kappa` of
    :math:`(\log\|A\hat x - y\|^2, \log R(\hat x))` over :math:`t = \log\lambda` (see the
    module docstring), refined by a parabola between grid weights.

    Arguments:
        make_problem: ``(weight, y) -> Problem`` with a regulariser ``R``; ``weight`` scalar.
        y: measurements, ``op.out_shape``.
        weights: ``(G,)`` increasing positive weights, ``G >= 5`` (e.g. ``jnp.logspace(-5, 0, 25)``;
            keyword-only).
        solver: any invjax solver (keyword-only).

    Returns:
        A :class:`RuleResult`: ``value`` the curvature at the corner, ``weights``/``values`` the
        grid and its curvature, ``x`` the reconstruction at the grid weight nearest the corner.

    Raises:
        TypeError: no regulariser, a bad ``solver``/``make_problem``, or the old positional form.
        ValueError: ``weights`` not a 1-D grid of at least 5, ``y`` not of ``out_shape``.

    Example:
        >>> import jax, jax.numpy as jnp, invjax as ij
        >>> A = ij.operators.Convolution(ij.operators.gaussian_psf(3, 1.0), (8, 8))
        >>> y = A(jnp.ones((8, 8))) + 0.1 * jax.random.normal(jax.random.key(0), (8, 8))
        >>> make = lambda w, y: ij.Problem(A, y, ij.functionals.SquaredL2(), w)
        >>> res = ij.tuning.lcurve(make, y, weights=jnp.logspace(-3, 1, 9),
        ...                        solver=ij.solvers.CG(max_iters=50, tol=1e-5))
        >>> res.values.shape
        (9,)
    """
    who = "tuning.lcurve"
    check_solver(solver, who)
    y = as_data(y, who)
    weights = jnp.asarray(weights)
    if weights.ndim != 1 or weights.shape[0] < 5:
        raise ValueError(f"{who}: `weights` must be a 1-D grid of at least 5 weights, got shape {weights.shape}")
    weights = weights.astype(real_dtype(y))
    problem = check_make_problem(make_problem, weights[0], y, who)
    if problem.regularizer is None:
        raise TypeError(f"{who}: the problem has no regulariser: the L-curve needs R(x)")
    if tuple(y.shape) != tuple(problem.op.out_shape):
        raise ValueError(
            f"{who}: `y` must have the operator's out_shape {tuple(problem.op.out_shape)}, got {tuple(y.shape)} "
            "(for a batch, jax.vmap the rule)"
        )
    result = _lcurve(make_problem, solver, y, weights)
    warn_if_unconverged(result, who)
    return result


def _curvature(rho, eta, t):
    """Signed curvature of the parametric curve ``(rho(t), eta(t))`` sampled at ``t``."""
    d_rho, d_eta = jnp.gradient(rho, t), jnp.gradient(eta, t)
    dd_rho, dd_eta = jnp.gradient(d_rho, t), jnp.gradient(d_eta, t)
    return (d_rho * dd_eta - dd_rho * d_eta) / (d_rho**2 + d_eta**2) ** 1.5


@eqx.filter_jit
def _lcurve(make_problem, solver, y, weights):
    def point(w):
        problem = make_problem(w, y)
        sol = solve(problem, solver)
        r = problem.op.mv(sol.x) - y
        return (jnp.log(jnp.sum(jnp.abs(r) ** 2)), jnp.log(problem.regularizer(sol.x)), sol.stats.converged, sol.x,
                sol.stats.iterations)

    rho, eta, conv, xs, its = jax.vmap(point)(weights)
    t = jnp.log(weights)
    kappa = _curvature(rho, eta, t)
    kappa = jnp.where(jnp.isfinite(kappa), kappa, -jnp.inf)
    # the end samples use one-sided differences: keep the corner in the interior
    G = weights.shape[0]
    inner = jnp.arange(G)
    kappa_in = jnp.where((inner >= 2) & (inner <= G - 3), kappa, -jnp.inf)
    i = jnp.clip(jnp.argmax(kappa_in), 1, G - 2)
    # parabola through the three samples around the maximum
    t0, t1, t2 = t[i - 1], t[i], t[i + 1]
    k0, k1, k2 = kappa[i - 1], kappa[i], kappa[i + 1]
    num = (t1 - t0) ** 2 * (k1 - k2) - (t1 - t2) ** 2 * (k1 - k0)
    den = (t1 - t0) * (k1 - k2) - (t1 - t2) * (k1 - k0)
    shift = jnp.where(den != 0, 0.5 * num / jnp.where(den != 0, den, 1), 0.0)
    t_star = jnp.clip(t1 - shift, t0, t2)
    t_star = jnp.where(jnp.isfinite(t_star), t_star, t1)
    at_bound = (jnp.argmax(kappa_in) <= 2) | (jnp.argmax(kappa_in) >= G - 3)
    # the corner's curvature uses the three samples around it
    converged = conv[i - 1] & conv[i] & conv[i + 1]
    near = jnp.where(jnp.abs(t_star - t0) < jnp.abs(t_star - t1), i - 1, jnp.where(jnp.abs(t_star - t2) < jnp.abs(t_star - t1), i + 1, i))
    return RuleResult(weight=jnp.exp(t_star), value=k1, weights=weights, values=kappa, weights_converged=conv, x=xs[near],
                      iterations=its[near].astype(jnp.int32), converged=converged, at_bound=at_bound,
                      solves=jnp.asarray(G, jnp.int32))
