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

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from .. import metrics
from ..solvers import solve
from ._common import as_data, check_make_problem, check_solver, real_dtype


class GridResult(NamedTuple):
    """Output of :func:`grid`.

    Attributes:
        weight: the shared oracle weight (best mean score over the batch), shape of one
            grid entry.
        score: its mean score.
        weights: the grid, ``(G,) + weight_shape``.
        scores: ``(G, B)`` score of each weight on each image.
        per_image_weight: ``(B,) + weight_shape``, the best weight for each image.
        per_image_score: ``(B,)`` its score.
        iterations: ``(G, B)`` lower-level iterations of each solve.
        converged: ``(G, B)`` whether each solve reached the solver's ``tol``.
    """

    weight: jax.Array
    score: jax.Array
    weights: jax.Array
    scores: jax.Array
    per_image_weight: jax.Array
    per_image_score: jax.Array
    iterations: jax.Array
    converged: jax.Array


def grid(make_problem, x_true, y, weights, solver, *, metric=None, data_range=None, chunk=None) -> GridResult:
    """Oracle weight by exhaustive search over ``weights`` with the true images.

    Args:
        make_problem: ``(weight, y) -> Problem`` for one image.
        x_true: ``(B,) + in_shape`` ground-truth images.
        y: ``(B,) + out_shape`` measurements (same ``B``).
        weights: ``(G,) + weight_shape`` candidate weights (e.g. ``jnp.logspace(-4, -1, 40)``).
        solver: any invjax solver.
        metric: ``metric(x, x_true) -> scalar``, higher is better (default PSNR,
            :func:`invjax.metrics.psnr` with ``data_range``). For a loss, pass its negative.
        data_range: peak-to-peak range for the default PSNR (default: each image's range).
        chunk: weights solved at once (default: all ``G``; smaller uses less memory).

    Returns:
        :class:`GridResult`.

    Example:
        >>> res = ij.tuning.grid(make_problem, x_true, y, jnp.logspace(-4, -1, 40), solver)
        >>> res.weight, res.per_image_weight
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
    scores, iters, conv = _run(make_problem, solver, metric, x_true, y, weights, chunk, data_range)
    mean = jnp.mean(scores, axis=1)
    best = jnp.argmax(mean)
    per = jnp.argmax(scores, axis=0)
    return GridResult(
        weight=weights[best],
        score=mean[best],
        weights=weights,
        scores=scores,
        per_image_weight=weights[per],
        per_image_score=jnp.take_along_axis(scores, per[None], axis=0)[0],
        iterations=iters,
        converged=conv,
    )


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
def _run(make_problem, solver, metric, x_true, y, weights, chunk, data_range):
    def per_weight(w):
        def per_image(xt, yi):
            sol = solve(make_problem(w, yi), solver)
            score = metrics.psnr(sol.x, xt, data_range) if metric is None else metric(sol.x, xt)
            return score, sol.stats.iterations, sol.stats.converged

        return jax.vmap(per_image)(x_true, y)

    return jax.lax.map(per_weight, weights, batch_size=chunk)
