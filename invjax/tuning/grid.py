r"""Grid search with ground truth: the oracle weight, the baseline every rule is measured against.

For weights :math:`\lambda_1, \dots, \lambda_G` and a batch of pairs :math:`(x_b, y_b)`,

.. math:: S_{gb} = \mathrm{metric}\big(\hat x(\lambda_g; y_b),\, x_b\big), \qquad
          \lambda^\star = \arg\max_g \tfrac1B \textstyle\sum_b S_{gb}, \qquad
          \lambda^\star_b = \arg\max_g S_{gb},

the shared oracle (best mean score over the batch) and the per-image oracles. The metric is
PSNR by default (higher is better). All ``G x B`` solves are one jitted program: a ``lax.map``
over the grid (``chunk`` weights at a time, vmapped) of a vmap over the batch.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Inexact, Int

from .. import metrics
from ..solvers import IterativeSolver, Problem, solve
from ._common import RuleResult, as_data, check_make_problem, check_solver, keyword_only, real_dtype, solution_like


class GridResult(RuleResult):
    """Output of :func:`grid`: a :class:`RuleResult` (``weight`` the shared oracle, ``value`` its
    mean score, ``weights`` the grid, ``values`` ``(G,)`` the mean score of each weight,
    ``weights_converged`` ``(G,)`` whether every image's solve there converged, ``x``
    ``(B,) + in_shape`` the reconstructions at the oracle weight, ``iterations``/``converged``
    ``(B,)`` and all-of-them there) and the per-image view.

    Attributes:
        scores: ``(G, B)`` score of each weight on each image.
        per_image_weight: ``(B,) + weight_shape``, the best weight for each image.
        per_image_score: ``(B,)`` its score.
        grid_iterations: ``(G, B)`` lower-level iterations of each solve.
        grid_converged: ``(G, B)`` whether each solve reached the solver's ``tol``.

    Arguments:
        scores, per_image_weight, per_image_score, grid_iterations, grid_converged: the
            attributes above, by keyword (:func:`grid` builds it).
        weight, value, weights, values, weights_converged: as for :class:`RuleResult`, by keyword.
        x, iterations, converged, at_bound, solves: likewise.

    Example:
        >>> import invjax as ij
        >>> issubclass(ij.tuning.GridResult, ij.tuning.RuleResult)
        True
    """

    scores: Float[Array, "G B"] = None
    per_image_weight: Any = None
    per_image_score: Float[Array, " B"] = None
    grid_iterations: Int[Array, "G B"] = None
    grid_converged: Bool[Array, "G B"] = None

    @property
    def score(self) -> Float[Array, ""]:
        """The oracle's mean score (``value``)."""
        return self.value


@keyword_only("tuning.grid", 3, "grid(make_problem, x_true, y, weights=..., solver=..., data_range=...)")
def grid(
    make_problem: Callable[[Any, Inexact[Array, "*out"]], Problem],
    x_true: Inexact[Array, "B *in"],
    y: Inexact[Array, "B *out"],
    *,
    weights: Float[Array, "G *w"],
    solver: IterativeSolver,
    metric: Callable | None = None,
    data_range: float | None = None,
    chunk: int | None = None,
) -> GridResult:
    r"""Oracle weight by exhaustive search over ``weights`` with the true images.

    :math:`\lambda^\star = \arg\max_g \frac1B\sum_b \mathrm{metric}(\hat x(\lambda_g; y_b), x_b)`
    and the per-image maxima (see the module docstring).

    Arguments:
        make_problem: ``(weight, y) -> Problem`` for one image.
        x_true: ``(B,) + in_shape`` ground-truth images.
        y: ``(B,) + out_shape`` measurements (same ``B``).
        weights: ``(G,) + weight_shape`` candidate weights (e.g. ``jnp.logspace(-4, -1, 40)``;
            keyword-only).
        solver: any invjax solver (keyword-only).
        metric: ``metric(x, x_true) -> scalar``, higher is better (default PSNR,
            :func:`invjax.metrics.psnr` with ``data_range``). For a loss, pass its negative.
        data_range: peak-to-peak range for the default PSNR (default: each image's range).
        chunk: weights solved at once (default: all ``G``; smaller uses less memory).

    Returns:
        A :class:`GridResult`.

    Raises:
        TypeError: a bad ``solver``/``make_problem``/``metric``, or the old positional form.
        ValueError: ``weights`` without a grid axis, or ``x_true``/``y`` not batches of the
            operator's shapes with the same length.

    Example:
        >>> import jax, jax.numpy as jnp, invjax as ij
        >>> A = ij.operators.Convolution(ij.operators.gaussian_psf(3, 1.0), (8, 8))
        >>> x = jnp.ones((2, 8, 8)).at[:, 2:5, 2:5].set(0.0)
        >>> y = jax.vmap(A)(x) + 0.05 * jax.random.normal(jax.random.key(0), (2, 8, 8))
        >>> make = lambda w, y: ij.Problem(A, y, ij.functionals.SquaredL2(), w)
        >>> res = ij.tuning.grid(make, x, y, weights=jnp.logspace(-3, 0, 4),
        ...                      solver=ij.solvers.CG(max_iters=50, tol=1e-5), data_range=1.0)
        >>> res.scores.shape, res.x.shape
        ((4, 2), (2, 8, 8))
    """
    who = "tuning.grid"
    check_solver(solver, who)
    x_true, y, weights = jnp.asarray(x_true), as_data(y, who), jnp.asarray(weights)
    if weights.ndim == 0 or weights.shape[0] == 0:
        raise ValueError(f"{who}: `weights` must have a leading grid axis of length >= 1, got shape {weights.shape}")
    if not jnp.issubdtype(weights.dtype, jnp.floating):
        weights = weights.astype(jnp.result_type(float))
    problem = check_make_problem(make_problem, weights[0], y[0] if y.ndim else y, who, one_image=False)
    _check_batch(x_true, y, problem, who)
    if metric is not None and not callable(metric):
        raise TypeError(f"{who}: `metric` must be a callable (x, x_true) -> scalar")
    if data_range is not None:
        data_range = jnp.asarray(data_range, real_dtype(x_true))
    G = weights.shape[0]
    chunk = G if chunk is None else int(chunk)
    if chunk < 1:
        raise ValueError(f"{who}: `chunk` must be >= 1, got {chunk}")
    return _grid(make_problem, solver, metric, x_true, y, weights, chunk, data_range)


def _check_batch(x_true, y, problem, who):
    in_shape, out_shape = tuple(problem.op.in_shape), tuple(problem.op.out_shape)
    if x_true.ndim != len(in_shape) + 1 or tuple(x_true.shape[1:]) != in_shape:
        raise ValueError(f"{who}: `x_true` must have shape (B,) + {in_shape}, got {tuple(x_true.shape)}")
    if y.ndim != len(out_shape) + 1 or tuple(y.shape[1:]) != out_shape:
        raise ValueError(f"{who}: `y` must have shape (B,) + {out_shape}, got {tuple(y.shape)}")
    if x_true.shape[0] != y.shape[0]:
        raise ValueError(
            f"{who}: `x_true` and `y` must hold the same number of images, got {x_true.shape[0]} and {y.shape[0]}"
        )


@eqx.filter_jit
def _grid(make_problem, solver, metric, x_true, y, weights, chunk, data_range):
    def per_weight(w):
        def per_image(xt, yi):
            sol = solve(make_problem(w, yi), solver)
            score = metrics.psnr(sol.x, xt, data_range) if metric is None else metric(sol.x, xt)
            return score.astype(real_dtype(xt)), sol.stats.iterations.astype(jnp.int32), sol.stats.converged, sol.x

        return jax.vmap(per_image)(x_true, y)

    # a scan over chunks of weights that keeps the reconstructions of the best mean score so far
    # (keeping all G x B would cost G times the memory; a second solve, a second compilation)
    G, B = weights.shape[0], y.shape[0]
    n = -(-G // chunk)
    pad = n * chunk - G
    padded = jnp.concatenate([weights, jnp.repeat(weights[-1:], pad, axis=0)]).reshape((n, chunk) + weights.shape[1:])
    valid = (jnp.arange(n * chunk) < G).reshape(n, chunk)
    x_like = solution_like(make_problem(weights[0], y[0]))
    rdt = real_dtype(x_true)

    def body(carry, inputs):
        best_mean, best_x, best_its, best_conv = carry
        ws, ok = inputs
        scores, its, conv, xs = jax.vmap(per_weight)(ws)
        mean = jnp.where(ok, jnp.mean(scores, axis=1), -jnp.inf)
        i = jnp.argmax(mean)
        better = mean[i] > best_mean
        carry = (jnp.where(better, mean[i], best_mean), jnp.where(better, xs[i], best_x),
                 jnp.where(better, its[i], best_its), jnp.where(better, conv[i], best_conv))
        return carry, (scores, its, conv)

    init = (jnp.asarray(-jnp.inf, rdt), jnp.zeros((B,) + x_like.shape, x_like.dtype), jnp.zeros((B,), jnp.int32),
            jnp.zeros((B,), bool))
    (_, x_best, its_best, conv_best), (scores, iters, conv) = jax.lax.scan(body, init, (padded, valid))
    scores, iters, conv = (v.reshape((n * chunk, B))[:G] for v in (scores, iters, conv))
    mean = jnp.mean(scores, axis=1)
    best = jnp.argmax(mean)
    per = jnp.argmax(scores, axis=0)
    return GridResult(
        weight=weights[best],
        value=mean[best],
        weights=weights,
        values=mean,
        weights_converged=jnp.all(conv, axis=1),
        x=x_best,
        iterations=its_best,
        converged=jnp.all(conv_best),
        at_bound=(best == 0) | (best == G - 1),
        solves=jnp.asarray(G * B, jnp.int32),
        scores=scores,
        per_image_weight=weights[per],
        per_image_score=jnp.take_along_axis(scores, per[None], axis=0)[0],
        grid_iterations=iters,
        grid_converged=conv,
    )
