"""Helpers shared by the parameter-selection rules: checks, the log-scale minimiser, results."""

from __future__ import annotations

import functools
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..operators.base import concrete_or_none
from ..solvers import IterativeSolver, Problem


class TuningWarning(UserWarning):
    """A parameter-selection run finished, but its result deserves a look (a zero gradient, a
    lower-level solver that did not converge, a non-finite loss).

    Example:
        >>> import invjax as ij
        >>> issubclass(ij.tuning.TuningWarning, UserWarning)
        True
    """


class RuleResult(eqx.Module):
    r"""What every parameter-selection rule returns: the weight and what the rule saw.

    One type for every rule (:func:`~invjax.tuning.discrepancy`, :func:`~invjax.tuning.gcv`,
    :func:`~invjax.tuning.sure`, :func:`~invjax.tuning.lcurve`; :func:`~invjax.tuning.grid`,
    :func:`~invjax.tuning.sure_grid` and :func:`~invjax.tuning.fit` return subclasses with a few
    more fields). It is an equinox module (a pytree): rules jit and ``jax.vmap`` over a batch of
    images, and every array field then gains a leading batch axis.

    Attributes:
        weight: the chosen weight (a scalar for the one-weight rules; a pytree like ``init``
            for :func:`~invjax.tuning.fit`).
        value: the rule's criterion at ``weight`` (discrepancy ratio
            ``||A x - y||^2 / (tau m sigma^2)``, GCV score, SURE risk per measurement, L-curve
            curvature, mean score of the grid, training loss).
        weights: ``(E,)`` every weight the rule evaluated, in increasing order where the rule
            searches (NaN for padding), or ``None`` where it keeps none.
        values: ``(E,)`` the criterion at each of ``weights`` (or ``None``).
        weights_converged: ``(E,)`` whether the solve(s) at each of ``weights`` reached the
            solver's ``tol`` (or ``None``).
        x: the reconstruction at ``weight`` (``op.in_shape``; ``(B,) + in_shape`` for the
            supervised rules), or ``None`` where the rule does not keep it.
        iterations: lower-level iterations of the solve at ``weight`` (int32; the most over
            the probes/images solved there).
        converged: ``True`` when the lower-level solve(s) at ``weight`` reached the solver's
            ``tol``. Every criterion value a rule can evaluate counts (an unconverged solve
            gives a less accurate value, not a missing one); ``False`` says the choice rests on
            an unconverged solve (a warning says so outside ``jit``): raise ``max_iters`` or
            loosen ``tol``. A rule that could evaluate its criterion at no weight raises.
        at_bound: ``True`` when the choice sits at an end of the searched range (the optimum,
            or the discrepancy root, may lie outside: widen ``bounds``).
        solves: lower-level solves spent, tangent (JVP) and probe solves included (int32).

    Arguments:
        weight, value, weights, values, weights_converged: the attributes above, by keyword
            (rules build it; ``None`` where a rule keeps nothing).
        x, iterations, converged, at_bound, solves: likewise.

    Example:
        >>> import jax.numpy as jnp, invjax as ij
        >>> res = ij.tuning.RuleResult(weight=jnp.asarray(0.1), value=jnp.asarray(1.0),
        ...                            converged=jnp.asarray(True), at_bound=jnp.asarray(False))
        >>> res.message
        'ok: the solve at the chosen weight converged, inside the searched range'
    """

    weight: Any
    value: Float[Array, ""]
    weights: Any = None
    values: Any = None
    weights_converged: Any = None
    x: Any = None
    iterations: Any = None
    converged: Any = None
    at_bound: Any = None
    solves: Any = None

    @property
    def message(self) -> str:
        """A one-line reading of ``converged`` and ``at_bound`` (outside ``jit``)."""
        try:
            ok = bool(np.all(np.asarray(self.converged)))
            inside = not bool(np.any(np.asarray(self.at_bound)))
        except (jax.errors.TracerBoolConversionError, jax.errors.ConcretizationTypeError,
                jax.errors.TracerArrayConversionError):
            return "traced: read `converged` and `at_bound`"
        if ok and inside:
            return "ok: the solve at the chosen weight converged, inside the searched range"
        parts = []
        if not ok:
            parts.append("the solve at the chosen weight did not reach the solver's tol (raise its max_iters or "
                         "loosen its tol)")
        if not inside:
            parts.append("the choice sits at an end of the searched range (widen `bounds`)")
        return "; ".join(parts)


def keyword_only(who: str, n_positional: int, usage: str, renamed: dict[str, str] | None = None):
    """Decorate a rule so that calls in an older form fail with a message naming the new one.

    Positional arguments past the first ``n_positional``, ``return_info=`` (rules now always
    return a :class:`RuleResult`) and the keys of ``renamed`` (old keyword -> new) raise
    ``TypeError`` naming ``usage``."""
    renamed = renamed or {}

    def decorate(fn):
        @functools.wraps(fn)
        def rule(*args, **kwargs):
            if len(args) > n_positional:
                raise TypeError(
                    f"{who}: takes {n_positional} positional arguments, got {len(args)}; everything after them is "
                    f"keyword-only: {usage}"
                )
            if "return_info" in kwargs:
                raise TypeError(
                    f"{who}: `return_info` is gone: every rule returns a RuleResult (`.weight`, `.value`, "
                    f"`.converged`, ...): {usage}"
                )
            for old, new in renamed.items():
                if old in kwargs:
                    raise TypeError(f"{who}: `{old}` is now `{new}`: {usage}")
            return fn(*args, **kwargs)

        return rule

    return decorate


def check_solver(solver, who: str) -> None:
    if not isinstance(solver, IterativeSolver):
        raise TypeError(f"{who}: `solver` must be an invjax solver, got {type(solver).__name__}")


def check_make_problem(make_problem, weight, y, who: str, one_image: bool = True) -> Problem:
    """Trace ``make_problem(weight, y)`` abstractly; it must return a :class:`Problem`."""
    if not callable(make_problem):
        raise TypeError(f"{who}: `make_problem` must be a callable (weight, y) -> Problem")
    try:
        problem = eqx.filter_eval_shape(make_problem, weight, y)
    except ValueError as err:
        hint = " (the rule takes one image: jax.vmap it over a batch)" if one_image else ""
        raise ValueError(f"{who}: `make_problem(weight, y)` failed for y of shape {tuple(jnp.shape(y))}{hint}: {err}") from err
    if not isinstance(problem, Problem):
        raise TypeError(f"{who}: `make_problem(weight, y)` must return an invjax Problem, got {type(problem).__name__}")
    return problem


def check_bounds(bounds, who: str) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{who}: `bounds` must be a pair (low, high) of positive numbers, got {bounds!r}") from err
    if not (0 < lo < hi and math.isfinite(hi)):
        raise ValueError(f"{who}: `bounds` must satisfy 0 < low < high < inf, got {bounds!r}")
    return lo, hi


def check_count(value, name: str, who: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{who}: `{name}` must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_sigma(sigma, y, who: str) -> jax.Array:
    """The noise level as a real scalar of ``y``'s precision, ``> 0`` and finite.

    A concrete value is checked now (``ValueError``); a traced one at run time
    (:func:`equinox.error_if`)."""
    sigma = jnp.asarray(sigma)
    if jnp.issubdtype(sigma.dtype, jnp.complexfloating):
        raise TypeError(f"{who}: `sigma` must be real, got {sigma.dtype}")
    if sigma.ndim != 0:
        raise ValueError(f"{who}: `sigma` must be a scalar noise standard deviation (vmap for a batch), got shape {sigma.shape}")
    sigma = sigma.astype(real_dtype(y))
    value = concrete_or_none(sigma)
    if value is not None:
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{who}: `sigma` must be finite and > 0, got {value}")
        return sigma
    return eqx.error_if(sigma, ~(jnp.isfinite(sigma) & (sigma > 0)), f"{who}: `sigma` must be finite and > 0")


def solution_like(problem) -> jax.ShapeDtypeStruct:
    """Shape and dtype of a solve's ``x`` for ``problem``, without tracing the solve."""
    from ..solvers.driver import working_dtype

    return jax.ShapeDtypeStruct(tuple(problem.op.in_shape), working_dtype(problem))


def real_dtype(x):
    x = jnp.asarray(x)
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.result_type(float)
    return jnp.finfo(dtype).dtype


def as_arrays(weight):
    """A weight (pytree) as arrays: a Python float would be a static argument of a compiled
    rule, one compilation per value."""
    return jax.tree_util.tree_map(jnp.asarray, weight)


def as_data(y, who: str) -> jax.Array:
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.inexact):
        y = y.astype(jnp.result_type(float))
    return y


_GOLD = (math.sqrt(5.0) - 1.0) / 2.0


def warn_if_unconverged(result: RuleResult, who: str) -> None:
    """Warn (outside ``jit``/``vmap`` only) when the lower-level solves at the choice did not
    converge, or the choice sits at an end of the search interval."""
    try:
        ok = bool(np.all(np.asarray(result.converged)))
        inside = not bool(np.any(np.asarray(result.at_bound)))
    except (jax.errors.TracerBoolConversionError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return
    import warnings

    if not ok:
        warnings.warn(
            f"{who}: the lower-level solve at the chosen weight did not reach the solver's tol (result.converged is "
            "False); the criterion there is less accurate: raise the solver's max_iters or loosen its tol",
            TuningWarning,
            stacklevel=4,
        )
    if not inside:
        warnings.warn(
            f"{who}: the chosen weight sits at an end of `bounds` (result.at_bound): the optimum may lie outside; "
            "widen `bounds`",
            TuningWarning,
            stacklevel=4,
        )


def fail_if_nothing_evaluated(t, value, who: str):
    """``t``, with a run-time error if the criterion could be evaluated at no weight (``value``
    is not finite): every solve failed (NaN) or every derivative solve failed."""
    return eqx.error_if(
        t,
        ~jnp.isfinite(value),
        f"{who}: the criterion could not be evaluated at any weight (every lower-level solve or derivative solve "
        "failed: check the data, the solver's settings and `bounds`)",
    )


def minimize_log(objective, lo: float, hi: float, grid_points: int, iters: int, dtype, aux_like):
    """Minimise ``objective(t) -> (value, aux)`` over ``t = log(weight)`` in ``[log lo, log hi]``.

    Every finite value counts, converged or not (non-finite ones count as ``+inf``); the
    ``aux`` of the chosen point is returned (a pytree shaped as ``aux_like``, e.g. the converged
    flag, the reconstruction and its iteration count).

    A coarse grid of ``grid_points`` values finds the best cell; a golden-section search then
    refines inside the two cells around it (``iters`` more evaluations, at least 2 when
    ``iters > 0``). All evaluations run in one ``lax.fori_loop`` whose body traces
    ``objective`` once (a vmapped grid would compile the solver twice more and, on CPU, run no
    faster), and the golden-section branch is chosen with ``where``, so the search vmaps with one
    evaluation per step. Returns ``(t, value, evaluations, at_bound, aux)``; ``value`` is
    ``inf`` when no evaluation was finite (the caller raises: :func:`fail_if_nothing_evaluated`).
    """
    G = grid_points
    n_gold = 0 if iters == 0 else max(iters, 2)
    ts = jnp.linspace(math.log(lo), math.log(hi), G, dtype=dtype)
    g = jnp.asarray(_GOLD, dtype)
    inf = jnp.asarray(jnp.inf, dtype)
    zero = jnp.zeros((), dtype)

    def body(k, carry):
        fs, a, b, c, d, fc, fd, t_best, f_best, aux_best = carry
        i = jnp.clip(jnp.argmin(fs), 1, G - 2)
        a0, b0 = ts[i - 1], ts[i + 1]
        left = fc < fd  # golden step: the minimum lies in [a, d]
        a_g, b_g = jnp.where(left, a, c), jnp.where(left, d, b)
        t_g = jnp.where(left, b_g - g * (b_g - a_g), a_g + g * (b_g - a_g))
        t = jnp.where(
            k < G,
            ts[jnp.minimum(k, G - 1)],
            jnp.where(k == G, b0 - g * (b0 - a0), jnp.where(k == G + 1, a0 + g * (b0 - a0), t_g)),
        )
        f, aux = objective(t)
        f = jnp.where(jnp.isfinite(f), f, inf).astype(dtype)
        fs = jnp.where(k < G, fs.at[jnp.minimum(k, G - 1)].set(f), fs)
        first, second, golden = k == G, k == G + 1, k > G + 1
        a = jnp.where(first, a0, jnp.where(golden, a_g, a))
        b = jnp.where(first, b0, jnp.where(golden, b_g, b))
        c_new = jnp.where(first, t, jnp.where(golden, jnp.where(left, t, d), c))
        fc_new = jnp.where(first, f, jnp.where(golden, jnp.where(left, f, fd), fc))
        d_new = jnp.where(second, t, jnp.where(golden, jnp.where(left, c, t), d))
        fd_new = jnp.where(second, f, jnp.where(golden, jnp.where(left, fc, f), fd))
        better = f < f_best
        aux_best = jax.tree_util.tree_map(lambda new, old: jnp.where(better, new, old), aux, aux_best)
        return (fs, a, b, c_new, d_new, fc_new, fd_new, jnp.where(better, t, t_best), jnp.where(better, f, f_best),
                aux_best)

    aux0 = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), aux_like)
    init = (jnp.full((G,), inf), zero, zero, zero, zero, inf, inf, ts[0], inf, aux0)
    fs, *_, t_best, f_best, aux_best = jax.lax.fori_loop(0, G + n_gold, body, init)
    best = jnp.argmin(fs)
    at_bound = (best == 0) | (best == G - 1)
    return t_best, f_best, jnp.asarray(G + n_gold, jnp.int32), at_bound, aux_best
