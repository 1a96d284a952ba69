r"""One batched solve over a weight grid, and the rules that choose a weight from it.

For a grid :math:`\lambda_1 < \dots < \lambda_G` every reconstruction is solved twice, at the data
:math:`y` and at :math:`y + \varepsilon b` (:math:`b` a Rademacher probe, :math:`\varepsilon =
\sigma / 10`): ``2 G`` problems in one call of :func:`invjax.solve_batch`, one compiled program.
From those solves, without the ground truth:

* **SURE** (Stein 1981), with the Monte-Carlo divergence of Ramani, Blu & Unser (IEEE TIP 17(9),
  2008) by finite differences,

  .. math:: \mathrm{SURE}(\lambda) = \frac1m\Big(\|A\hat x_\lambda - y\|^2 - N s^2
            + 2 s^2\, \tfrac1\varepsilon \operatorname{Re}\big\langle b,
              A\hat x_\lambda(y + \varepsilon b) - A\hat x_\lambda(y)\big\rangle\Big),

  an unbiased estimate of the measurement-domain risk :math:`\|A(\hat x_\lambda - x)\|^2 / m`
  (``m`` measured entries, ``N`` real noise components of variance ``s^2``: ``N = m, s = sigma``
  for real data, ``N = 2m, s^2 = sigma^2 / 2`` for complex). The reconstructions run a fixed
  number of iterations, so :math:`\hat x_\lambda` is one smooth map of the data and the
  difference quotient is its directional derivative, not solver noise. This is the rule
  ``invjax.tuning.sure`` implements with exact (implicit) Jacobian-vector products and a golden
  section search; here the divergence costs ``G`` forward solves in the same batch instead of
  a second compiled program (on the 64^2 CT sweep the implicit JVP added 2.7 s of compilation
  at ``adjoint_tol=0.1`` and 25 s of compiling and solving at the default tolerance, with the
  machine loaded; the extra forward solves share the program). One probe serves every weight, so its Monte-Carlo error is
  largely a common offset of the curve, which leaves the minimiser in place;
* **projected SURE**, where there are fewer measurements than pixels (CT): the same estimate of
  :math:`\|W A(\hat x_\lambda - x)\|^2 / n` with :math:`W = (A^T A + \varepsilon' c I)^{-1}
  A^T`, the image error on what the data determine (Eldar, IEEE TSP 57(2), 2009), from
  :math:`\|W r\|^2 + s^2 \langle W b, W(2 J b - b)\rangle` (see :func:`_evaluate`);
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

from .. import metrics
from ..solvers import Problem, solve_batch

EPSILON = 0.1  # finite-difference step, in units of the noise standard deviation


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
            form, see :func:`_evaluate`).
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


def probe(key, y):
    """A Rademacher probe shaped like ``y`` (complex: independent signs in both parts)."""
    if jnp.iscomplexobj(y):
        k1, k2 = jax.random.split(key)
        real = jnp.real(y).dtype
        return (jax.random.rademacher(k1, y.shape, real) + 1j * jax.random.rademacher(k2, y.shape, real)).astype(y.dtype)
    return jax.random.rademacher(key, y.shape, y.dtype)


def run(task, method, key) -> Sweep:
    """Solve ``method`` (a :class:`~invjax.demo.tasks.Variational`) of ``task`` on its grid."""
    t0 = time.perf_counter()
    grid = jnp.asarray(method.grid)
    G = grid.shape[0]
    y = task.y
    b = probe(key, y)
    eps = EPSILON * task.sigma
    data = jnp.concatenate([jnp.broadcast_to(y, (G,) + y.shape), jnp.broadcast_to(y + eps * b, (G,) + y.shape)])
    template = Problem(task.op, y, method.regularizer, grid[0], constraint=method.constraint)
    sol = solve_batch(template, method.solver, data=data, weight=jnp.concatenate([grid, grid]))
    # real noise components and their variance: complex data carry sigma^2 / 2 in each part
    s2 = task.sigma**2 / 2 if task.complex else task.sigma**2
    components = (2 if task.complex else 1) * task.measured
    out = _evaluate(task.op, task.show, task.weighting, y, b, sol.x, task.x_true, eps, s2, components, task.measured)
    fit, sure, risk, psnr = (np.asarray(v, np.float64) for v in out)
    ratio = fit / (task.measured * task.sigma**2)
    x = jax.block_until_ready(sol.x[:G])
    return Sweep(np.asarray(method.grid, np.float64), x, psnr, ratio, sure, risk,
                 int(np.max(np.asarray(sol.stats.iterations))), time.perf_counter() - t0)


def tikhonov_inverse(op, vs, eps: float, iterations: int = 30):
    """``W v = A^H (A A^H + eps c I)^{-1} v`` (= ``(A^H A + eps c I)^{-1} A^H v``, the Tikhonov
    reconstruction of ``v``) for a batch ``vs``, by a fixed number of conjugate-gradient steps
    on the data space (so ``W`` is linear). The scale ``c = ||A 1||^2 / ||1||^2`` is the Rayleigh
    quotient of the constant image, close to ``||A||^2`` for projections and blurs (1817 against
    1854 for 64^2 CT with 30 angles) at the cost of one product.

    A plain ``lax.fori_loop`` rather than :class:`invjax.solvers.CG`: the driver's stopping test,
    statistics and objective are of no use here and doubled this program's compilation time."""
    ones = jnp.ones(op.in_shape, op.dtype)
    shift = eps * jnp.sum(jnp.abs(op.mv(ones)) ** 2) / ones.size

    def one(v):
        def gram(z):
            return op.mv(op.rmv(z)) + shift * z

        def step(_, carry):
            z, r, p, rr = carry
            q = gram(p)
            pq = jnp.real(jnp.vdot(p, q))
            alpha = jnp.where(pq > 0, rr / jnp.where(pq > 0, pq, 1), 0)  # 0 once converged exactly
            z, r = z + alpha * p, r - alpha * q
            rr_new = jnp.real(jnp.vdot(r, r))
            beta = jnp.where(rr > 0, rr_new / jnp.where(rr > 0, rr, 1), 0)
            return z, r, r + beta * p, rr_new

        rr = jnp.real(jnp.vdot(v, v))
        z, *_ = jax.lax.fori_loop(0, iterations, step, (jnp.zeros_like(v), v, v, rr))
        return op.rmv(z)

    return jax.vmap(one)(vs)


@eqx.filter_jit
def _evaluate(op, show, weighting, y, b, xs, x_true, eps, s2, components, measured):
    """``(||A x - y||^2, SURE, its true value, PSNR)`` per weight, from
    ``xs = [x(y); x(y + eps b)]``.

    Without ``weighting`` SURE estimates ``||A (x - x_true)||^2 / m``. With ``weighting = e``
    (every entry of ``y`` measured) it estimates ``||W A (x - x_true)||^2 / n`` for ``W`` the
    Tikhonov inverse above: the image error on what the measurements determine (the projected
    SURE of Eldar, IEEE TSP 57(2), 2009; ``invjax.tuning.sure``'s ``weighting``), from
    ``||W r||^2 + s^2 <W b, W (2 J b - b)>`` with ``J b`` the difference quotient."""
    G = xs.shape[0] // 2
    ax = jax.vmap(op.mv)(xs)
    ax0, ax1 = ax[:G], ax[G:]
    axes = tuple(range(1, ax0.ndim))
    r = ax0 - y
    fit = jnp.sum(jnp.abs(r) ** 2, axis=axes)
    jb = (ax1 - ax0) / eps
    error = ax0 - op.mv(x_true.astype(xs.dtype))
    if weighting is None:
        div = jnp.sum(jnp.real(jnp.conj(b) * jb), axis=axes)
        sure = (fit - components * s2 + 2 * s2 * div) / measured
        risk = jnp.sum(jnp.abs(error) ** 2, axis=axes) / measured
    else:
        # one batched solve for all 3 G + 1 vectors
        w = tikhonov_inverse(op, jnp.concatenate([r, 2 * jb - b, error, b[None]]), weighting)
        wr, w2, we, wb = w[:G], w[G : 2 * G], w[2 * G : 3 * G], w[3 * G :]
        wax = tuple(range(1, wr.ndim))
        pixels = wr[0].size
        sure = (jnp.sum(jnp.abs(wr) ** 2, axis=wax) + s2 * jnp.sum(jnp.real(jnp.conj(wb) * w2), axis=wax)) / pixels
        risk = jnp.sum(jnp.abs(we) ** 2, axis=wax) / pixels
    psnr = jax.vmap(lambda im: metrics.psnr(im, x_true, data_range=1.0))(jax.vmap(show)(xs[:G]))
    return fit, sure, risk, psnr


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
