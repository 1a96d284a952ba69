r"""Generalized cross-validation for linear (Tikhonov) reconstructions.

For a reconstruction linear in the data, :math:`\hat x_\lambda = G_\lambda y`, with influence
matrix :math:`H_\lambda = A G_\lambda` (for Tikhonov,
:math:`H_\lambda = A (A^\top A + \lambda I)^{-1} A^\top`), GCV (Golub, Heath & Wahba,
"Generalized cross-validation as a method for choosing a good ridge parameter",
Technometrics 21(2), 1979) chooses

.. math:: \lambda^\star = \arg\min_\lambda V(\lambda), \qquad
          V(\lambda) = \frac{\tfrac1m \|(I - H_\lambda) y\|^2}{\big(\tfrac1m \operatorname{tr}(I - H_\lambda)\big)^2},

which needs no noise level. The trace is estimated by Hutchinson's estimator
(Hutchinson, Commun. Stat. Simul. Comput. 18(3), 1989; Girard 1989 for GCV) with Rademacher
probes :math:`b_p` drawn from an explicit key,
:math:`\operatorname{tr} H_\lambda \approx \tfrac1P \sum_p b_p^\top H_\lambda b_p`, where
:math:`H_\lambda b = A \hat x_\lambda(b)` is one more solve with the probe as data (the map is
linear). The same probes serve every :math:`\lambda`, so :math:`V` is a smooth curve, minimised
over :math:`t = \log\lambda` by a coarse vmapped grid and golden-section search.

The problem must be linear in ``y``: a ``SquaredL2`` fidelity, a ``SquaredL2`` regulariser
without data (or none), no constraint (``TypeError`` otherwise; use :func:`~invjax.tuning.sure`
for nonlinear reconstructions).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from typing import Any, Callable

from jaxtyping import Array, Float, Inexact, PRNGKeyArray

from ..functionals import Scaled, SquaredL2
from ..solvers import IterativeSolver, Problem, solve
from ._common import (
    RuleResult,
    as_arrays,
    as_data,
    check_bounds,
    check_count,
    check_make_problem,
    check_solver,
    fail_if_nothing_evaluated,
    keyword_only,
    minimize_log,
    real_dtype,
    solution_like,
    warn_if_unconverged,
)


@keyword_only("tuning.gcv", 3, "gcv(make_problem, y, key, solver=..., bounds=..., probes=...)",
              renamed={"iters": "refine"})
def gcv(
    make_problem: Callable[[Any, Inexact[Array, "*out"]], Problem],
    y: Inexact[Array, "*out"],
    key: PRNGKeyArray,
    *,
    solver: IterativeSolver,
    bounds: tuple[float, float] = (1e-6, 1e2),
    probes: int = 4,
    grid_points: int = 9,
    refine: int = 16,
) -> RuleResult:
    r"""Weight minimising the GCV function for one image (``jax.vmap`` it over a batch).

    :math:`V(\lambda) = \frac{\frac1m\|(I - H_\lambda)y\|^2}{(\frac1m\operatorname{tr}(I - H_\lambda))^2}`
    with a Hutchinson trace (see the module docstring).

    Arguments:
        make_problem: ``(weight, y) -> Problem``, linear in ``y`` (Tikhonov).
        y: measurements, ``op.out_shape``.
        key: a ``jax.random`` key for the Hutchinson probes.
        solver: any solver for the problem (``CG`` for Tikhonov; keyword-only).
        bounds: search interval ``(low, high)`` of the weight (default ``(1e-6, 1e2)``).
        probes: Hutchinson probes (default 4); each evaluation solves ``1 + probes`` problems
            in one vmapped call.
        grid_points: coarse grid size (default 9, >= 3).
        refine: golden-section evaluations after the grid (default 16: the bracket of two grid
            cells shrinks by 0.618 per evaluation).

    Returns:
        A :class:`RuleResult`: ``value`` the GCV score at the weight, ``x`` the reconstruction
        there (``weights``/``values`` are ``None``).

    Raises:
        TypeError: a problem not linear in ``y``, a bad ``solver``/``make_problem``, or the old
            positional form.
        ValueError: bad ``bounds``/``probes``/``grid_points``/``refine``, ``y`` not of ``out_shape``.

    Example:
        >>> import jax, jax.numpy as jnp, invjax as ij
        >>> A = ij.operators.Convolution(ij.operators.gaussian_psf(3, 1.0), (8, 8))
        >>> y = A(jnp.ones((8, 8))) + 0.1 * jax.random.normal(jax.random.key(0), (8, 8))
        >>> make = lambda w, y: ij.Problem(A, y, ij.functionals.SquaredL2(), w)
        >>> res = ij.tuning.gcv(make, y, jax.random.key(1), solver=ij.solvers.CG(max_iters=50, tol=1e-5),
        ...                     grid_points=5, refine=4)
        >>> bool(res.weight > 0)
        True
    """
    who = "tuning.gcv"
    y = _check(who, make_problem, y, solver, probes)
    lo, hi = check_bounds(bounds, who)
    grid_points = check_count(grid_points, "grid_points", who, minimum=3)
    refine = check_count(refine, "refine", who, minimum=0)
    result = _gcv(make_problem, solver, y, key, lo, hi, probes, grid_points, refine)
    warn_if_unconverged(result, who)
    return result


@keyword_only("tuning.gcv_score", 3, "gcv_score(make_problem, y, key, weight=..., solver=...)")
def gcv_score(
    make_problem: Callable[[Any, Inexact[Array, "*out"]], Problem],
    y: Inexact[Array, "*out"],
    key: PRNGKeyArray,
    *,
    weight: Any,
    solver: IterativeSolver,
    probes: int = 4,
) -> Float[Array, ""]:
    r"""The GCV function :math:`V(\lambda)` at one ``weight``, with a Hutchinson trace.

    Arguments:
        make_problem, y, key, solver, probes: as in :func:`gcv`.
        weight: the weight passed to ``make_problem`` (keyword-only).

    Returns:
        The scalar score (real, ``y``'s precision).

    Raises:
        TypeError, ValueError: as :func:`gcv`.

    Example:
        >>> import jax, jax.numpy as jnp, invjax as ij
        >>> A = ij.operators.Convolution(ij.operators.gaussian_psf(3, 1.0), (8, 8))
        >>> y = A(jnp.ones((8, 8))) + 0.1 * jax.random.normal(jax.random.key(0), (8, 8))
        >>> make = lambda w, y: ij.Problem(A, y, ij.functionals.SquaredL2(), w)
        >>> v = ij.tuning.gcv_score(make, y, jax.random.key(1), weight=0.1, solver=ij.solvers.CG(max_iters=50, tol=1e-5))
        >>> bool(v > 0)
        True
    """
    who = "tuning.gcv_score"
    y = _check(who, make_problem, y, solver, probes, weight=weight)
    return _score_at(make_problem, solver, y, key, probes, as_arrays(weight))


@eqx.filter_jit
def _score_at(make_problem, solver, y, key, probes, weight):
    return _score(make_problem, solver, y, _probes(key, y, probes), weight)[0]


def _linear(f) -> bool:
    while isinstance(f, Scaled):
        f = f.functional
    return isinstance(f, SquaredL2) and f.data is None


def _check(who, make_problem, y, solver, probes, weight=None):
    check_solver(solver, who)
    y = as_data(y, who)
    weight = jnp.ones((), real_dtype(y)) if weight is None else weight
    problem = check_make_problem(make_problem, weight, y, who)
    if tuple(y.shape) != tuple(problem.op.out_shape):
        raise ValueError(
            f"{who}: `y` must have the operator's out_shape {tuple(problem.op.out_shape)}, got {tuple(y.shape)} "
            "(for a batch, jax.vmap the rule)"
        )
    reg = problem.regularizer
    if not _linear(problem.fidelity) or (reg is not None and not _linear(reg)) or problem.constraint is not None:
        raise TypeError(
            f"{who}: GCV needs a reconstruction linear in y (SquaredL2 fidelity, SquaredL2 regulariser "
            "without data, no constraint); use tuning.sure for nonlinear reconstructions"
        )
    check_count(probes, "probes", who)
    return y


def _probes(key, y, probes):
    return jax.random.rademacher(key, (probes,) + tuple(y.shape), dtype=real_dtype(y)).astype(y.dtype)


def _score(make_problem, solver, y, b, weight):
    def residual_and_fit(data):
        problem = make_problem(weight, data)
        sol = solve(problem, solver)
        return problem.op.mv(sol.x), (sol.stats.converged, sol.x, sol.stats.iterations)

    hy, (conv, xs, its) = jax.vmap(residual_and_fit)(jnp.concatenate([y[None], b]))
    # the measured entries: on masked data tr(I - H) runs over the observed ones only
    m = jnp.asarray(make_problem(weight, y).op.n_measurements, real_dtype(y))
    axes = tuple(range(1, b.ndim))
    trace_h = jnp.mean(jnp.sum(jnp.real(jnp.conj(b) * hy[1:]), axis=axes))
    resid = jnp.sum(jnp.abs(hy[0] - y) ** 2) / m
    return (resid / (1 - trace_h / m) ** 2).astype(real_dtype(y)), (jnp.all(conv), xs[0], jnp.max(its).astype(jnp.int32))


@eqx.filter_jit
def _gcv(make_problem, solver, y, key, lo, hi, probes, grid_points, refine):
    rdt = real_dtype(y)
    b = _probes(key, y, probes)

    def objective(t):
        return _score(make_problem, solver, y, b, jnp.exp(t).astype(rdt))

    x_like = solution_like(make_problem(jnp.ones((), rdt), y))
    aux_like = (jax.ShapeDtypeStruct((), bool), x_like, jax.ShapeDtypeStruct((), jnp.int32))
    t, value, evals, at_bound, (converged, x, its) = minimize_log(objective, lo, hi, grid_points, refine, rdt, aux_like)
    t = fail_if_nothing_evaluated(t, value, "tuning.gcv")
    return RuleResult(
        weight=jnp.exp(t), value=value, x=x, iterations=its.astype(jnp.int32), converged=converged, at_bound=at_bound,
        solves=(evals * (1 + probes)).astype(jnp.int32),
    )
