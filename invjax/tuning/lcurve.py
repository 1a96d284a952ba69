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

from ..solvers import solve
from ._common import RuleInfo, as_data, check_make_problem, check_solver, real_dtype, warn_if_unconverged


def lcurve(make_problem, y, solver, weights, *, return_info: bool = False):
    """Weight at the L-curve corner for one image (``jax.vmap`` it over a batch).

    Args:
        make_problem: ``(weight, y) -> Problem`` with a regulariser ``R``; ``weight`` scalar.
        y: measurements, ``op.out_shape``.
        solver: any invjax solver.
        weights: ``(G,)`` increasing positive weights, ``G >= 5`` (e.g. ``jnp.logspace(-5, 0, 25)``).
        return_info: also return a :class:`RuleInfo` (``value``: the curvature at the corner).

    Returns:
        The weight (a scalar), or ``(weight, info)``.
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
    info = _lcurve(make_problem, solver, y, weights)
    warn_if_unconverged(info, who)
    return (info.weight, info) if return_info else info.weight


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
        return jnp.log(jnp.sum(jnp.abs(r) ** 2)), jnp.log(problem.regularizer(sol.x)), sol.stats.converged

    rho, eta, conv = jax.vmap(point)(weights)
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
    return RuleInfo(weight=jnp.exp(t_star), value=k1, solves=jnp.asarray(G, jnp.int32), at_bound=at_bound, converged=converged)
