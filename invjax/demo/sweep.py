r"""One batched solve over a weight grid, and the rules that choose a weight from it.

For a grid :math:`\lambda_1 < \dots < \lambda_G` every reconstruction is solved twice, at the data
:math:`y` and at :math:`y + \varepsilon b` (:math:`b` a Rademacher probe, :math:`\varepsilon =
\sigma / 10`): ``2 G`` problems in one compiled program, :func:`invjax.tuning.sure_grid` (the
lower level of ``invjax.tuning.sure``: the formulas, complex data and the projected form are
documented there). From those solves, without the ground truth:

* **SURE** (Stein 1981) with the Monte-Carlo divergence of Ramani, Blu & Unser (IEEE TIP 17(9),
  2008) by finite differences: an unbiased estimate of the measurement-domain risk
  :math:`\|A(\hat x_\lambda - x)\|^2 / m` (``m`` measured entries, ``op.n_measurements``). The
  reconstructions run a fixed number of iterations, so :math:`\hat x_\lambda` is one smooth map
  of the data and the difference quotient is its directional derivative, not solver noise. One
  probe serves every weight, so its Monte-Carlo error is largely a common offset of the curve,
  which leaves the minimiser in place;
* **projected SURE**, where there are fewer measurements than pixels (CT): the same estimate of
  :math:`\|W A(\hat x_\lambda - x)\|^2 / n` with :math:`W = (A^T A + \varepsilon' c I)^{-1}
  A^T` (:func:`invjax.tuning.regularized_inverse`), the image error on what the data determine
  (Eldar, IEEE TSP 57(2), 2009);
* **the discrepancy principle** (Morozov 1966): the weight whose residual ratio
  :math:`\|A\hat x_\lambda - y\|^2 / (m \sigma^2)` is closest to 1 (``invjax.tuning.discrepancy``
  brackets the same root with extra solves);

and, with it, **the oracle**: the grid weight of highest PSNR against the ground truth, the
reference each rule is measured against.
"""

from __future__ import annotations

import dataclasses
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import metrics, tuning
from ..solvers import Problem

EPSILON = 0.1  # difference step, in units of sigma (the default of invjax.tuning.sure)


@dataclasses.dataclass
class Sweep:
    """The grid and what was measured at each weight.

    Attributes:
        weights: ``(G,)`` the grid.
        x: ``(G,) + in_shape`` the reconstructions from ``y``.
        psnr: ``(G,)`` PSNR of ``show(x)`` against the ground truth (data range 1; SSIM is
            computed for the table's rows only: across the grid it cost 0.6 s of compilation
            per task).
        residual_ratio: ``(G,)`` ``||A x - y||^2 / (m sigma^2)``.
        sure: ``(G,)`` the SURE estimate of ``||A (x - x_true)||^2 / m`` (or of its weighted
            form ``||W A (x - x_true)||^2 / n``).
        risk: ``(G,)`` what SURE estimates, computed with the ground truth (for reference).
        iterations: solver iterations per solve.
        seconds: wall time of the batched solve and its evaluation, compilation included.
    """

    weights: np.ndarray
    x: jax.Array
    psnr: np.ndarray
    residual_ratio: np.ndarray
    sure: np.ndarray
    risk: np.ndarray
    iterations: int
    seconds: float

    @property
    def solves(self) -> int:
        return 2 * len(self.weights)


def run(task, method, key) -> Sweep:
    """Solve ``method`` (a :class:`~invjax.demo.tasks.Variational`) of ``task`` on its grid:
    :func:`invjax.tuning.sure_grid`, then the truth's view of the same reconstructions."""
    t0 = time.perf_counter()
    grid = jnp.asarray(method.grid)
    op, regularizer, constraint = task.op, method.regularizer, method.constraint

    def make_problem(weight, data):
        return Problem(op, data, regularizer, weight, constraint=constraint)

    weighting = None if task.weighting is None else tuning.regularized_inverse(op, task.weighting)
    res = tuning.sure_grid(make_problem, task.y, task.sigma, key, solver=method.solver, weights=grid, weighting=weighting,
                           divergence="fd", epsilon=EPSILON)
    risk, psnr = _truth(op, task.show, weighting, res.reconstructions, task.x_true)
    ratio = np.asarray(res.residual, np.float64) / (task.measured * task.sigma**2)
    x = jax.block_until_ready(res.reconstructions)
    return Sweep(np.asarray(method.grid, np.float64), x, np.asarray(psnr, np.float64), ratio,
                 np.asarray(res.values, np.float64), np.asarray(risk, np.float64),
                 int(np.max(np.asarray(res.grid_iterations))), time.perf_counter() - t0)


@eqx.filter_jit
def _truth(op, show, weighting, xs, x_true):
    """What SURE estimates, with the truth (``||A e||^2 / m`` or ``||W A e||^2 / n`` for the error
    ``e`` of each reconstruction), and the PSNR of each reconstruction."""
    error = jax.vmap(op.mv)(xs - x_true.astype(xs.dtype)[None])
    if weighting is not None:
        error = jax.vmap(weighting)(error)
        size = error[0].size
    else:
        size = op.n_measurements
    axes = tuple(range(1, error.ndim))
    risk = jnp.sum(jnp.abs(error) ** 2, axis=axes) / size
    psnr = jax.vmap(lambda im: metrics.psnr(im, x_true, data_range=1.0))(jax.vmap(show)(xs))
    return risk, psnr


def scores(images, x_true):
    """``(PSNR, SSIM)`` of a batch of real images against ``x_true`` (data range 1)."""
    one = lambda im: (metrics.psnr(im, x_true, data_range=1.0), metrics.ssim(im, x_true, data_range=1.0))  # noqa: E731
    return jax.vmap(one)(images)


# ---- the rules -----------------------------------------------------------------------------------
def pick_sure(sw: Sweep) -> int:
    """Index of the smallest finite SURE value."""
    values = np.where(np.isfinite(sw.sure), sw.sure, np.inf)
    return int(np.argmin(values))


def pick_discrepancy(sw: Sweep, tau: float = 1.0) -> int:
    """Index of the residual ratio closest to ``tau`` (in log scale)."""
    ratio = np.where(np.isfinite(sw.residual_ratio) & (sw.residual_ratio > 0), sw.residual_ratio, np.inf)
    return int(np.argmin(np.abs(np.log(ratio / tau))))


def pick_oracle(sw: Sweep) -> int:
    """Index of the highest PSNR against the ground truth (uses the truth: the reference)."""
    return int(np.nanargmax(sw.psnr))


RULES = {"SURE": pick_sure, "discrepancy": pick_discrepancy}
