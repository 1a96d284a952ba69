r"""Stein's unbiased risk estimate (SURE) for any reconstruction, linear or not: one batched grid.

For :math:`y = A x + n` with white Gaussian noise of standard deviation :math:`\sigma` on the
:math:`m` measured entries (``op.n_measurements``: a mask's unobserved zeros do not count) and a
reconstruction :math:`\hat x_\lambda(y)` (any solver), Stein's lemma (Stein, "Estimation of the
mean of a multivariate normal distribution", Ann. Stat. 9(6), 1981) gives an unbiased estimate of
the predicted risk :math:`\mathbb E\,\|A(\hat x_\lambda - x)\|^2 / m` that does not need
:math:`x`:

.. math::
    \mathrm{SURE}(\lambda) = \frac1m\Big(\|A\hat x_\lambda - y\|^2 - m\sigma^2
        + 2 s^2 \operatorname{div}_y A\hat x_\lambda\Big),

with :math:`s^2 = \sigma^2` for real data and :math:`s^2 = \sigma^2/2` for complex data (MRI:
:math:`\mathbb E|n_i|^2 = \sigma^2`, half in each part; the divergence is that of the real map
on :math:`\mathbb R^{2m}`, the real inner product :math:`\operatorname{Re}\langle\cdot,\cdot\rangle`).
The divergence is estimated by Monte Carlo (Ramani, Blu & Unser, "Monte-Carlo SURE: a black-box
optimization of regularization parameters for general denoising algorithms", IEEE TIP 17(9),
2008): with probes :math:`b_p` of zero mean and identity covariance (Rademacher by default;
complex data: independent real and imaginary parts),

.. math:: \operatorname{div}_y A\hat x \approx \tfrac1P \textstyle\sum_p
          \operatorname{Re}\big\langle b_p, J b_p\big\rangle, \qquad
          J b \approx \frac{A\hat x(y + \varepsilon b) - A\hat x(y)}{\varepsilon},\quad
          \varepsilon = \texttt{epsilon}\cdot\sigma,

so each weight costs one more solve per probe, at the perturbed data, in the same batch
(``divergence="fd"``), or an exact Jacobian-vector product through the solver
(``divergence="jvp"``, the default of :func:`sure`: ``jax.linearize``, the implicit function
theorem for ``diff="implicit"``, one linear tangent solve).
The difference quotient is the derivative of the map the solver computes: exact for a fixed
iteration count (``tol=0``) and for converged solves; a solver stopped by a loose ``tol`` adds
its stopping error divided by :math:`\varepsilon` (use ``"jvp"`` there, or a tighter ``tol``).

**Projected SURE.** Where the measurement-domain risk is a poor proxy for the image error
(deblurring weights errors by the blur; CT has fewer measurements than pixels), a linear
weighting :math:`W` estimates :math:`\|W A(\hat x - x)\|^2 / n_W` instead, from

.. math:: \|W(A\hat x - y)\|^2 + s^2\, \tfrac1P \textstyle\sum_p
          \operatorname{Re}\big\langle W b_p, W(2 J b_p - b_p)\big\rangle ,

with :math:`W = (A^H A + \varepsilon' c I)^{-1} A^H` (:func:`regularized_inverse`: by FFT for a
circulant operator, by conjugate gradients on the data space otherwise): the image error on what
the data determine (Eldar, "Generalized SURE for exponential families", IEEE TSP 57(2), 2009;
Giryes, Elad & Eldar, ACHA 30(3), 2011).

**One compiled program.** :func:`sure_grid` solves a grid of weights, each at :math:`y` and at
:math:`y + \varepsilon b_p`, vmapped (``chunk`` weights at a time), and returns everything it saw.
:func:`sure` runs a coarse log grid over ``bounds`` and ``refine`` zoom rounds around the best
weight, ``batch`` weights at a time, in one ``lax.scan`` that traces the solver once. The same
probes serve every weight (common random numbers), so the Monte-Carlo error is largely a common
offset of the curve and leaves its minimiser in place. Both jit and vmap over a batch of images.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Inexact, Int, PRNGKeyArray

from ..solvers import IterativeSolver, Problem, linear, solve
from ._common import (
    RuleResult,
    as_arrays,
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

_PROBES = ("rademacher", "gaussian")
_DIVERGENCES = ("fd", "jvp")
EPSILON = 0.1  # finite-difference step, in units of sigma


class SureGrid(RuleResult):
    """Output of :func:`sure_grid`: a :class:`RuleResult` (``weight`` the grid weight of least
    SURE, ``value`` its SURE, ``weights`` the grid, ``values`` ``(G,)`` SURE at each weight,
    ``weights_converged`` ``(G,)`` whether every solve there, at ``y`` and at the probes,
    converged and SURE is finite, ``x`` the reconstruction at ``weight``) and the whole grid.

    Attributes:
        reconstructions: ``(G,) + in_shape`` the reconstructions from ``y`` at every weight.
        residual: ``(G,)`` ``||A x - y||^2`` (the discrepancy ratio is
            ``residual / (measurements * sigma^2)``).
        measurements: the measured entries ``m`` (``op.n_measurements``).
        grid_iterations: ``(G,)`` the most iterations of the solves at each weight.

    Arguments:
        reconstructions, residual, measurements, grid_iterations: the attributes above, by
            keyword (:func:`sure_grid` builds it).
        weight, value, weights, values, weights_converged: as for :class:`RuleResult`, by keyword.
        x, iterations, converged, at_bound, solves: likewise.

    Example:
        >>> import invjax as ij
        >>> issubclass(ij.tuning.SureGrid, ij.tuning.RuleResult)
        True
    """

    reconstructions: Any = None
    residual: Float[Array, " G"] = None
    measurements: Any = None
    grid_iterations: Int[Array, " G"] = None


@keyword_only("tuning.sure", 4, "sure(make_problem, y, sigma, key, solver=..., bounds=..., ...)",
              renamed={"iters": "refine"})
def sure(
    make_problem: Callable[[Any, Inexact[Array, "*out"]], Problem],
    y: Inexact[Array, "*out"],
    sigma: float | Float[Array, ""],
    key: PRNGKeyArray,
    *,
    solver: IterativeSolver,
    weights: Float[Array, " G"] | None = None,
    bounds: tuple[float, float] = (1e-6, 1e2),
    grid_points: int = 8,
    refine: int = 6,
    batch: int = 1,
    weighting: Callable | None = None,
    probes: int = 1,
    probe: str = "rademacher",
    divergence: str = "jvp",
    epsilon: float = EPSILON,
) -> RuleResult:
    r"""Weight minimising SURE for one image (``jax.vmap`` it over a batch of images and keys).

    :math:`\mathrm{SURE}(\lambda) = \frac1m(\|A\hat x_\lambda - y\|^2 - m\sigma^2 + 2s^2\operatorname{div}_y A\hat x_\lambda)`,
    or its projected form with ``weighting`` (see the module docstring).

    Arguments:
        make_problem: ``(weight, y) -> Problem``; ``weight`` is a positive scalar.
        y: measurements, ``op.out_shape``, real or complex.
        sigma: absolute noise standard deviation, a positive scalar (complex data:
            ``E|n_i|^2 = sigma^2``).
        key: a ``jax.random`` key for the probes (explicit: the same key gives the same choice).
        solver: any invjax solver (keyword-only; with ``divergence="jvp"``: one whose solution
            differentiates in ``y``).
        weights: ``(G,)`` increasing positive weights to start from (default: ``grid_points``
            log-spaced over ``bounds``).
        bounds: search interval ``(low, high)`` of the default grid (default ``(1e-6, 1e2)``).
        grid_points: size of the default grid (default 8, >= 3).
        refine: zoom rounds after the grid (default 6; 0 keeps the best grid weight). With
            ``batch=1`` each solves the vertex of the parabola through the best weight and its
            two neighbours (in ``log`` weight, safeguarded inside the bracket; the midpoint of
            the larger cell where there is none); with ``batch > 1`` it splits ``batch`` new
            weights evenly between the two cells around the best so far.
        batch: weights solved at once (vmapped; default 1): the grid runs in
            ``ceil(G / batch)`` steps, each zoom round in one. Every step starts its solves
            from the solver states of the previous step (grid) or of the best weight (zoom):
            images for unrolled solvers. On a CPU a
            vmapped solve stopped by ``tol`` runs every member as long as the slowest, so 1 is
            fastest there; a larger batch pays for fixed iteration counts (``tol=0``) and on
            accelerators.
        weighting: ``None`` (the measurement-domain risk) or a linear map ``W`` on ``out_shape``
            arrays (e.g. :func:`regularized_inverse`: projected SURE).
        probes: Monte-Carlo probes (default 1; each costs a solve per weight).
        probe: ``"rademacher"`` (default, lower variance) or ``"gaussian"``.
        divergence: ``"jvp"`` (default: an exact JVP through the solver, one tangent solve per
            probe) or ``"fd"`` (a difference quotient from a solve at
            ``y + epsilon * sigma * b`` in the same batch: any solver, e.g. fixed iteration
            counts, as the demo).
        epsilon: the difference step in units of ``sigma`` (default 0.1).

    Returns:
        A :class:`RuleResult`: ``value`` SURE at the weight; ``weights``, ``values``,
        ``weights_converged`` every weight evaluated, in increasing order (NaN padding last),
        with its SURE value and convergence flag; ``x`` the reconstruction at the weight;
        ``solves`` all solves (probes included).

    Raises:
        TypeError: a bad ``solver``/``make_problem``/``weighting``, complex ``y`` for a real
            operator, or the old positional form.
        ValueError: ``sigma`` not finite and ``> 0``, bad ``weights``/``bounds``/``probes``/
            ``probe``/``divergence``/``epsilon``, ``y`` not of ``out_shape``.

    Example:
        >>> import jax, jax.numpy as jnp, invjax as ij
        >>> A = ij.operators.Convolution(ij.operators.gaussian_psf(3, 1.0), (8, 8))
        >>> y = A(jnp.ones((8, 8))) + 0.1 * jax.random.normal(jax.random.key(0), (8, 8))
        >>> make = lambda w, y: ij.Problem(A, y, ij.functionals.SquaredL2(), w)
        >>> cg = ij.solvers.CG(max_iters=50, tol=1e-5)
        >>> res = ij.tuning.sure(make, y, 0.1, jax.random.key(1), solver=cg, grid_points=4, refine=2)
        >>> res.values.shape, bool(res.weight > 0)
        ((6,), True)
    """
    who = "tuning.sure"
    y, sigma, weighting, problem = _check(who, make_problem, y, sigma, solver, weighting, probes, probe, divergence, epsilon)
    if weights is None:
        lo, hi = check_bounds(bounds, who)
        grid_points = check_count(grid_points, "grid_points", who, minimum=3)
        ts = jnp.linspace(math.log(lo), math.log(hi), grid_points, dtype=real_dtype(y))
    else:
        ts = jnp.log(_check_weights(weights, y, who))
    refine = check_count(refine, "refine", who, minimum=0)
    batch = check_count(batch, "batch", who)
    result = _sure(make_problem, solver, weighting, y, sigma, key, ts, refine, batch, probes, probe, divergence,
                   float(epsilon))
    warn_if_unconverged(result, who)
    return result


@keyword_only("tuning.sure_grid", 4, "sure_grid(make_problem, y, sigma, key, weights=..., solver=..., ...)")
def sure_grid(
    make_problem: Callable[[Any, Inexact[Array, "*out"]], Problem],
    y: Inexact[Array, "*out"],
    sigma: float | Float[Array, ""],
    key: PRNGKeyArray,
    *,
    weights: Float[Array, " G"],
    solver: IterativeSolver,
    weighting: Callable | None = None,
    probes: int = 1,
    probe: str = "rademacher",
    divergence: str = "jvp",
    epsilon: float = EPSILON,
    chunk: int | None = None,
) -> SureGrid:
    """SURE on a given grid of weights, every solve in one compiled program.

    The lower level of :func:`sure`, for a precomputed grid: it returns every reconstruction and
    value, so a caller can pick by its own rule (the grid discrepancy principle from
    ``res.residual``) or compare with the truth.

    Arguments:
        make_problem, y, sigma, key, solver, weighting, probes, probe, divergence, epsilon: as in
            :func:`sure`.
        weights: ``(G,)`` positive weights (keyword-only).
        chunk: weights solved at once (default: all ``G``, vmapped; smaller uses less memory).

    Returns:
        A :class:`SureGrid`.

    Raises:
        TypeError, ValueError: as :func:`sure`.

    Example:
        >>> import jax, jax.numpy as jnp, invjax as ij
        >>> A = ij.operators.Convolution(ij.operators.gaussian_psf(3, 1.0), (8, 8))
        >>> y = A(jnp.ones((8, 8))) + 0.1 * jax.random.normal(jax.random.key(0), (8, 8))
        >>> make = lambda w, y: ij.Problem(A, y, ij.functionals.SquaredL2(), w)
        >>> cg = ij.solvers.CG(max_iters=50, tol=1e-5)
        >>> res = ij.tuning.sure_grid(make, y, 0.1, jax.random.key(1), weights=jnp.logspace(-2, 1, 4), solver=cg)
        >>> res.values.shape, res.reconstructions.shape
        ((4,), (4, 8, 8))
    """
    who = "tuning.sure_grid"
    y, sigma, weighting, _ = _check(who, make_problem, y, sigma, solver, weighting, probes, probe, divergence, epsilon)
    weights = _check_weights(weights, y, who, increasing=False)
    chunk = weights.shape[0] if chunk is None else check_count(chunk, "chunk", who)
    return _grid(make_problem, solver, weighting, y, sigma, key, weights, probes, probe, divergence, float(epsilon),
                 min(chunk, weights.shape[0]))


@keyword_only("tuning.sure_risk", 4, "sure_risk(make_problem, y, sigma, key, weight=..., solver=..., ...)")
def sure_risk(
    make_problem: Callable[[Any, Inexact[Array, "*out"]], Problem],
    y: Inexact[Array, "*out"],
    sigma: float | Float[Array, ""],
    key: PRNGKeyArray,
    *,
    weight: Any,
    solver: IterativeSolver,
    weighting: Callable | None = None,
    probes: int = 1,
    probe: str = "rademacher",
    divergence: str = "jvp",
    epsilon: float = EPSILON,
) -> Float[Array, ""]:
    """The SURE estimate at one weight (any shape: scalar, per direction, an image).

    An estimate of ``||W A (x_hat - x)||^2 / m_W`` (see the module docstring). With
    ``divergence="jvp"`` it is differentiable in ``weight`` where the solver's derivatives are.

    Arguments:
        make_problem, y, sigma, key, solver, weighting, probes, probe, divergence, epsilon: as in
            :func:`sure`.
        weight: the weight passed to ``make_problem`` (keyword-only).

    Returns:
        The risk per measurement (per output entry of ``weighting``), a real scalar.

    Raises:
        TypeError, ValueError: as :func:`sure`.

    Example:
        >>> import jax, jax.numpy as jnp, invjax as ij
        >>> A = ij.operators.Convolution(ij.operators.gaussian_psf(3, 1.0), (8, 8))
        >>> y = A(jnp.ones((8, 8))) + 0.1 * jax.random.normal(jax.random.key(0), (8, 8))
        >>> make = lambda w, y: ij.Problem(A, y, ij.functionals.SquaredL2(), w)
        >>> cg = ij.solvers.CG(max_iters=50, tol=1e-5)
        >>> r = ij.tuning.sure_risk(make, y, 0.1, jax.random.key(1), weight=0.1, solver=cg)
        >>> r.shape
        ()
    """
    who = "tuning.sure_risk"
    y, sigma, weighting, _ = _check(who, make_problem, y, sigma, solver, weighting, probes, probe, divergence, epsilon,
                                    weight=weight)
    return _risk_at(make_problem, solver, weighting, y, sigma, key, probes, probe, divergence, float(epsilon),
                    as_arrays(weight))


def sure_estimate(op, y, sigma, b, x, x_probe, *, epsilon: float = EPSILON, weighting=None):
    """SURE from reconstructions already computed (any method): at ``y`` and at ``y + eps b_p``.

    Arguments:
        op: the forward operator ``A``.
        y: measurements, ``op.out_shape``.
        sigma: noise standard deviation.
        b: ``(P,) + out_shape`` the probes (identity covariance; see :func:`probes`).
        x: ``(G,) + in_shape`` reconstructions from ``y`` (e.g. one per weight).
        x_probe: ``(G, P) + in_shape`` reconstructions from ``y + epsilon * sigma * b[p]``.
        epsilon: the step in units of ``sigma`` (default 0.1).
        weighting: ``None`` or a linear map ``W`` (projected SURE).

    Returns:
        ``(G,)`` SURE values (see the module docstring).

    Raises:
        ValueError: ``sigma`` not finite and ``> 0``.

    Example:
        >>> import jax, jax.numpy as jnp, invjax as ij
        >>> A = ij.operators.Convolution(ij.operators.gaussian_psf(3, 1.0), (4, 4))
        >>> y, b = jnp.ones((4, 4)), ij.tuning.probes(jax.random.key(0), jnp.ones((4, 4)), 2)
        >>> ij.tuning.sure_estimate(A, y, 0.1, b, jnp.ones((3, 4, 4)), jnp.ones((3, 2, 4, 4))).shape
        (3,)
    """
    y = as_data(y, "tuning.sure_estimate")
    sigma = check_sigma(sigma, y, "tuning.sure_estimate")
    eps = epsilon * sigma
    ax = jax.vmap(op.mv)(x)
    axp = jax.vmap(jax.vmap(op.mv))(x_probe)
    return _values(y, sigma, b, ax - y, (axp - ax[:, None]) / eps, weighting, op.n_measurements)


def probes(key, y, count: int = 1, kind: str = "rademacher"):
    """``(count,) + y.shape`` probes of zero mean and identity covariance: Rademacher or Gaussian
    entries; for complex ``y`` independent real and imaginary parts (each of unit variance).

    Arguments:
        key: a ``jax.random`` key.
        y: an array of the measurements' shape and dtype.
        count: the number of probes (default 1).
        kind: ``"rademacher"`` (default) or ``"gaussian"``.

    Returns:
        ``(count,) + y.shape`` probes of ``y``'s dtype.

    Example:
        >>> import jax, jax.numpy as jnp, invjax as ij
        >>> ij.tuning.probes(jax.random.key(0), jnp.zeros(3), 2).shape
        (2, 3)
    """
    shape = (count,) + tuple(jnp.shape(y))
    dtype = jnp.asarray(y).dtype
    rdt = real_dtype(y)
    draw = jax.random.rademacher if kind == "rademacher" else jax.random.normal
    if jnp.issubdtype(dtype, jnp.complexfloating):
        k1, k2 = jax.random.split(key)
        return (draw(k1, shape, rdt) + 1j * draw(k2, shape, rdt)).astype(dtype)
    return draw(key, shape, rdt).astype(dtype)


class RegularizedInverse(eqx.Module):
    r"""``W v = (A^H A + eps c I)^{-1} A^H v``, the Tikhonov reconstruction of ``v`` (see
    :func:`regularized_inverse`). Call it on one ``out_shape`` array.

    Arguments:
        op: the forward operator; shift: ``eps c``; filt: the FFT filter of a circulant ``op``
            (else ``None``: CG); iterations: CG steps (build it with :func:`regularized_inverse`).

    Example:
        >>> import jax.numpy as jnp, invjax as ij
        >>> W = ij.tuning.regularized_inverse(ij.operators.Convolution(ij.operators.gaussian_psf(3, 1.0), (4, 4)))
        >>> W(jnp.ones((4, 4))).shape
        (4, 4)
    """

    op: object
    shift: jax.Array
    filt: jax.Array | None
    iterations: int = eqx.field(static=True)

    def __call__(self, v):
        if self.filt is not None:
            shape = tuple(self.op.in_shape)
            spectrum = jnp.fft.rfft2(v) * self.filt.astype(jnp.result_type(v.dtype, jnp.complex64))
            return jnp.fft.irfft2(spectrum, s=shape).astype(v.dtype)
        op, shift = self.op, self.shift.astype(real_dtype(v))

        def gram(z):  # A A^H + shift on the data space: one product each way per step
            return op.mv(op.rmv(z)) + shift * z

        # a fixed number of conjugate-gradient steps (tol 0) of the library's one CG (its guarded
        # step freezes once the residual reaches rounding level): the same computation for every v
        z, _ = linear.cg(gram, v, tol=0.0, max_iters=self.iterations, unroll=True, check=False)
        return op.rmv(z)


def regularized_inverse(op, eps: float = 1e-2, *, iterations: int = 30) -> RegularizedInverse:
    r"""The weighting ``W = (A^H A + eps c I)^{-1} A^H`` of projected SURE.

    ``W A`` keeps the image where the data determine it and damps what ``A`` does not see, so
    with ``weighting=W`` SURE estimates the image error on what the measurements determine.

    * a 2-D real circulant operator (a Fourier symbol ``a``, e.g.
      :class:`~invjax.operators.Convolution`): exact, by FFT, with ``c = max |a|^2``: ``W A`` is
      the filter :math:`|a_k|^2 / (|a_k|^2 + \varepsilon \max|a|^2)`;
    * any other operator (CT, MRI, masks): ``A^H (A A^H + eps c I)^{-1} v`` by ``iterations``
      conjugate-gradient steps on the data space (:func:`invjax.solvers.linear.cg`), with
      ``c = ||A 1||^2 / ||1||^2`` (the Rayleigh quotient of the constant image: close to
      ``||A||^2`` for blurs and projections at the cost of one product).

    Arguments:
        op: the forward operator.
        eps: relative regularisation, ``> 0`` (default ``1e-2``).
        iterations: CG steps where there is no FFT (default 30).

    Returns:
        A :class:`RegularizedInverse`, callable on ``op.out_shape`` arrays, returning
        ``op.in_shape`` arrays.

    Raises:
        ValueError: ``eps`` not a finite number ``> 0``, ``iterations`` not an int ``>= 1``.

    Example:
        >>> import jax.numpy as jnp, invjax as ij
        >>> A = ij.operators.Mask(jnp.ones((4, 4)).at[0].set(0.0))
        >>> W = ij.tuning.regularized_inverse(A, 1e-2, iterations=5)
        >>> W(jnp.ones((4, 4))).shape
        (4, 4)
    """
    who = "tuning.regularized_inverse"
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"{who}: `eps` must be a finite number > 0, got {eps!r}")
    check_count(iterations, "iterations", who)
    symbol = op.fourier_symbol() if hasattr(op, "fourier_symbol") else None
    circulant = (symbol is not None and len(op.in_shape) == 2 and tuple(op.in_shape) == tuple(op.out_shape)
                 and not jnp.issubdtype(op.dtype, jnp.complexfloating))
    if circulant:
        a = symbol[0] if symbol.ndim == 3 else symbol
        a2 = jnp.abs(a) ** 2
        return RegularizedInverse(op, eps * jnp.max(a2), jnp.conj(a) / (a2 + eps * jnp.max(a2)), iterations)
    ones = jnp.ones(op.in_shape, op.dtype)
    c = jnp.sum(jnp.abs(op.mv(ones)) ** 2) / ones.size
    return RegularizedInverse(op, eps * c, None, iterations)


# ---- internals -------------------------------------------------------------------------------


def _check(who, make_problem, y, sigma, solver, weighting, count, probe, divergence, epsilon, weight=None):
    check_solver(solver, who)
    y = as_data(y, who)
    weight = jnp.ones((), real_dtype(y)) if weight is None else weight
    problem = check_make_problem(make_problem, weight, y, who)
    if tuple(y.shape) != tuple(problem.op.out_shape):
        raise ValueError(
            f"{who}: `y` must have the operator's out_shape {tuple(problem.op.out_shape)}, got {tuple(y.shape)} "
            "(for a batch, jax.vmap the rule)"
        )
    if jnp.issubdtype(y.dtype, jnp.complexfloating) and not jnp.issubdtype(problem.op.out_dtype, jnp.complexfloating):
        raise TypeError(f"{who}: `y` must be real for the real operator {type(problem.op).__name__}, got {y.dtype}")
    if weighting is not None and not callable(weighting):
        raise TypeError(f"{who}: `weighting` must be None or a linear callable on measurements, got {weighting!r}")
    check_count(count, "probes", who)
    if probe not in _PROBES:
        raise ValueError(f"{who}: `probe` must be one of {_PROBES}, got {probe!r}")
    if divergence not in _DIVERGENCES:
        raise ValueError(f"{who}: `divergence` must be one of {_DIVERGENCES}, got {divergence!r}")
    if isinstance(epsilon, bool) or not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"{who}: `epsilon` must be a finite number > 0, got {epsilon!r}")
    return y, check_sigma(sigma, y, who), weighting, problem


def _check_weights(weights, y, who, increasing=True):
    weights = jnp.asarray(weights)
    if weights.ndim != 1 or weights.shape[0] < (3 if increasing else 1):
        raise ValueError(f"{who}: `weights` must be a 1-D grid of at least {3 if increasing else 1} weights, "
                         f"got shape {weights.shape}")
    weights = weights.astype(real_dtype(y))
    try:
        w = jax.device_get(weights)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return weights
    import numpy as np

    if not np.all(np.isfinite(w) & (w > 0)):
        raise ValueError(f"{who}: `weights` must be finite and > 0")
    if increasing and not np.all(np.diff(w) > 0):
        raise ValueError(f"{who}: `weights` must be increasing")
    return weights


def _values(y, sigma, b, r, jb, weighting, m):
    """SURE for each weight from residuals ``r`` ``(G,) + out`` and ``J b`` ``(G, P) + out``."""
    rdt = real_dtype(y)
    s2 = sigma**2 / 2 if jnp.issubdtype(y.dtype, jnp.complexfloating) else sigma**2
    G, P = jb.shape[:2]
    if weighting is None:
        axes = tuple(range(1, r.ndim))
        fit = jnp.sum(jnp.abs(r) ** 2, axis=axes)
        div = jnp.mean(jnp.sum(jnp.real(jnp.conj(b[None]) * jb), axis=tuple(range(2, jb.ndim))), axis=1)
        m = jnp.asarray(m, rdt)
        return ((fit - m * sigma**2 + 2 * s2 * div) / m).astype(rdt)
    # one batched application of W to all G + G P + P vectors (one batched CG for the CG path)
    out = tuple(y.shape)
    stacked = jnp.concatenate([r, (2 * jb - b[None]).reshape((G * P,) + out), b])
    w = jax.vmap(weighting)(stacked)
    wr, w2, wb = w[:G], w[G : G + G * P].reshape((G, P) + w.shape[1:]), w[G + G * P :]
    axes = tuple(range(1, wr.ndim))
    n = wr[0].size
    cross = jnp.mean(jnp.sum(jnp.real(jnp.conj(wb[None]) * w2), axis=tuple(range(2, w2.ndim))), axis=1)
    return ((jnp.sum(jnp.abs(wr) ** 2, axis=axes) + s2 * cross) / n).astype(rdt)


def _per_weight(make_problem, solver, y, sigma, b, divergence, epsilon, warm="x"):
    """``(weight, start) -> (r, J b, xs, converged, iterations, ends)``: the solves at one weight.

    ``start`` is where they start (``None``: the solver's default): with ``warm="x"`` images,
    with ``warm="state"`` whole solver states (duals, step sizes: a new weight's solve from a
    neighbour's state took a fraction of the iterations of one from its image); for
    ``divergence="fd"`` one per solve, ``(1 + P,)`` batched (at ``y`` first, then each probe),
    for ``"jvp"`` one. ``ends`` are the same for the solves just run (the next start); ``xs``
    the solutions, at ``y`` first."""
    eps = epsilon * sigma

    def run(problem, start):
        if start is None:
            return solve(problem, solver)
        if warm == "state":
            return solve(problem, solver, warm_start=start)
        return solve(problem, solver, x0=start)

    def end(sol):
        return sol.state if warm == "state" else sol.x

    def at(weight, start=None):
        if divergence == "fd":
            data = jnp.concatenate([y[None], y[None] + eps.astype(y.dtype) * b])
            if start is None:
                sols = jax.vmap(lambda d: run(make_problem(weight, d), None))(data)
            else:
                sols = jax.vmap(lambda d, s: run(make_problem(weight, d), s))(data, start)
            op = make_problem(weight, y).op
            ax = jax.vmap(op.mv)(sols.x)
            return (ax[0] - y, (ax[1:] - ax[0]) / eps, sols.x, jnp.all(sols.stats.converged),
                    jnp.max(sols.stats.iterations).astype(jnp.int32), end(sols))

        def forward(data):
            problem = make_problem(weight, data)
            sol = run(problem, start)
            return problem.op.mv(sol.x), (sol.x, sol.stats.converged, sol.stats.iterations, end(sol))

        ax, jvp, (x, conv, iters, ends) = jax.linearize(forward, y, has_aux=True)
        jb = jax.vmap(jvp)(b)
        xs = jnp.broadcast_to(x, (1 + b.shape[0],) + x.shape)
        return ax - y, jb, xs, conv, iters.astype(jnp.int32), ends

    return at


def _nan_on_failure(solver, divergence):
    # a failed implicit-derivative solve marks that weight's value as failed (NaN: skipped by the
    # search) instead of stopping the whole search with an error
    # (adjoint_failure is an InitVar shorthand for the solver's ImplicitAdjoint: not among fields())
    from ..solvers import ImplicitAdjoint

    if divergence == "jvp" and isinstance(getattr(solver, "adjoint", None), ImplicitAdjoint):
        return dataclasses.replace(solver, adjoint_failure="nan")
    return solver


@eqx.filter_jit
def _risk_at(make_problem, solver, weighting, y, sigma, key, count, probe, divergence, epsilon, weight):
    b = probes(key, y, count, probe)
    at = _per_weight(make_problem, _nan_on_failure(solver, divergence), y, sigma, b, divergence, epsilon)
    r, jb, *_ = at(weight)
    m = make_problem(weight, y).op.n_measurements
    return _values(y, sigma, b, r[None], jb[None], weighting, m)[0]


@eqx.filter_jit
def _grid(make_problem, solver, weighting, y, sigma, key, weights, count, probe, divergence, epsilon, chunk):
    b = probes(key, y, count, probe)
    solver = _nan_on_failure(solver, divergence)
    at = _per_weight(make_problem, solver, y, sigma, b, divergence, epsilon)
    r, jb, xs, conv, iters, _ = jax.lax.map(at, weights, batch_size=chunk)
    m = make_problem(weights[0], y).op.n_measurements
    values = _values(y, sigma, b, r, jb, weighting, m)
    fit = jnp.sum(jnp.abs(r) ** 2, axis=tuple(range(1, r.ndim))).astype(real_dtype(y))
    ok = conv & jnp.isfinite(values)
    best = jnp.argmin(jnp.where(jnp.isfinite(values), values, jnp.inf))
    G = weights.shape[0]
    return SureGrid(
        weight=weights[best], value=values[best], weights=weights, values=values, weights_converged=ok,
        x=xs[best, 0], iterations=iters[best], converged=ok[best], at_bound=(best == 0) | (best == G - 1),
        solves=jnp.asarray(G * (1 + count), jnp.int32), reconstructions=xs[:, 0], residual=fit,
        measurements=jnp.asarray(m), grid_iterations=iters,
    )


@eqx.filter_jit
def _sure(make_problem, solver, weighting, y, sigma, key, ts, refine, batch, count, probe, divergence, epsilon):
    """Grid (in ``ceil(G / batch)`` steps) then ``refine`` zoom rounds, in one ``lax.scan``."""
    rdt = real_dtype(y)
    b = probes(key, y, count, probe)
    solver = _nan_on_failure(solver, divergence)
    G = ts.shape[0]
    grid_steps = -(-G // batch)
    steps = grid_steps + refine
    E = steps * batch
    inf = jnp.asarray(jnp.inf, rdt)
    padded = jnp.concatenate([ts, jnp.full((grid_steps * batch - G,), ts[-1], rdt)])
    # continuation: each step's solves start from solver states of earlier ones (the implicit
    # derivative does not depend on the start; an unrolled one would be truncated: images then)
    warm = "state" if solver.diff == "implicit" else "x"
    at = _per_weight(make_problem, solver, y, sigma, b, divergence, epsilon, warm)
    w0 = jnp.exp(ts[0]).astype(rdt)
    m = make_problem(w0, y).op.n_measurements
    shape = solution_like(make_problem(w0, y))
    x_zero = jnp.zeros(tuple(shape.shape), shape.dtype)

    def first(d):
        problem = make_problem(w0, d)
        return solver.init(problem, jnp.zeros(shape.shape, shape.dtype)) if warm == "state" else x_zero

    if divergence == "fd":
        start0 = jax.vmap(first)(jnp.concatenate([y[None], y[None] + (epsilon * sigma).astype(y.dtype) * b]))
    else:
        start0 = first(y)

    def pick(tree, i):
        return jax.tree_util.tree_map(lambda leaf: leaf[i], tree)

    def choose(flag, new, old):
        return jax.tree_util.tree_map(lambda n, o: jnp.where(flag, n, o), new, old)

    def body(carry, s):
        t_all, f_all, ok_all, filled, start_last, start_best, x_best, f_best, i_best = carry
        # zoom: the batch's points split between the two cells around the best weight so far
        # (the larger cell gets the odd one), evenly inside each; at an end, one cell
        f_masked = jnp.where(filled, f_all, inf)
        best = jnp.argmin(f_masked)
        t_best = t_all[best]
        below = filled & (t_all < t_best)
        above = filled & (t_all > t_best)
        lower = jnp.where(jnp.any(below), jnp.max(jnp.where(below, t_all, -inf)), t_best)
        upper = jnp.where(jnp.any(above), jnp.min(jnp.where(above, t_all, inf)), t_best)
        left_larger = (t_best - lower) >= (upper - t_best)
        n_left = jnp.where(upper > t_best, batch // 2 + jnp.where(left_larger, batch % 2, 0), batch)
        n_left = jnp.where(lower < t_best, n_left, 0)
        n_right = batch - n_left
        j = jnp.arange(batch)
        zoom = jnp.where(j < n_left, t_best - (t_best - lower) * (j + 1) / (n_left + 1),
                         t_best + (upper - t_best) * (j - n_left + 1) / (n_right + 1)).astype(rdt)
        if batch == 1:
            # one point per round: the vertex of the parabola through the best point and its two
            # neighbours (successive parabolic interpolation, as Brent's method), kept inside the
            # bracket and away from the points already solved; the midpoint of the larger cell
            # where there is no such vertex (an end of the grid, no curvature, a vertex too close)
            f_lo = jnp.min(jnp.where(filled & (t_all == lower), f_all, inf))
            f_up = jnp.min(jnp.where(filled & (t_all == upper), f_all, inf))
            f1 = f_masked[best]
            d0, d2 = t_best - lower, upper - t_best
            num = d0**2 * (f1 - f_up) - d2**2 * (f1 - f_lo)
            den = d0 * (f1 - f_up) + d2 * (f1 - f_lo)
            vertex = t_best - 0.5 * num / jnp.where(den != 0, den, 1)
            usable = (d0 > 0) & (d2 > 0) & jnp.isfinite(f_lo) & jnp.isfinite(f_up) & (den < 0) & jnp.isfinite(vertex)
            vertex = jnp.clip(vertex, lower + 0.1 * d0, upper - 0.1 * d2)
            usable = usable & (jnp.abs(vertex - t_best) >= 0.1 * jnp.minimum(d0, d2))
            zoom = jnp.where(usable, vertex, zoom).astype(rdt)
        start = s * batch
        t_new = jnp.where(s < grid_steps, jax.lax.dynamic_slice(padded, (jnp.minimum(start, padded.shape[0] - batch),), (batch,)), zoom)
        valid = (s >= grid_steps) | (start + jnp.arange(batch) < G)
        # warm starts (continuation): the grid from the previous grid step's last weight, a zoom
        # round from the best weight so far; every weight of a batch from the same point
        start_now = choose(s < grid_steps, start_last, start_best)
        r, jb, xs, conv, its, ends = jax.vmap(lambda w: at(w, start_now))(jnp.exp(t_new).astype(rdt))
        values = _values(y, sigma, b, r, jb, weighting, m)
        conv = conv & jnp.isfinite(values)
        values = jnp.where(jnp.isfinite(values) & valid, values, inf)
        i = jnp.argmin(values)
        better = values[i] < f_best
        x_best = jnp.where(better, xs[i, 0], x_best)
        start_best = choose(better, pick(ends, i), start_best)
        i_best = jnp.where(better, its[i], i_best)
        f_best = jnp.where(better, values[i], f_best)
        start_last = pick(ends, batch - 1)
        t_all = jax.lax.dynamic_update_slice(t_all, t_new, (start,))
        f_all = jax.lax.dynamic_update_slice(f_all, values, (start,))
        ok_all = jax.lax.dynamic_update_slice(ok_all, conv, (start,))
        filled = jax.lax.dynamic_update_slice(filled, valid, (start,))
        return (t_all, f_all, ok_all, filled, start_last, start_best, x_best, f_best, i_best), None

    init = (jnp.zeros((E,), rdt), jnp.full((E,), inf), jnp.zeros((E,), bool), jnp.zeros((E,), bool), start0, start0,
            x_zero, inf, jnp.zeros((), jnp.int32))
    (t_all, f_all, ok_all, filled, _, _, x_best, _, i_best), _ = jax.lax.scan(body, init, jnp.arange(steps))
    f_masked = jnp.where(filled, f_all, inf)
    best = jnp.argmin(f_masked)
    value = f_masked[best]
    t = fail_if_nothing_evaluated(t_all[best], value, "tuning.sure")
    at_bound = (t_all[best] <= ts[0]) | (t_all[best] >= ts[-1])
    # what it saw, in increasing weight (the grid's padding last, as NaN)
    order = jnp.argsort(jnp.where(filled, t_all, inf))
    seen = filled[order]
    nan = jnp.asarray(jnp.nan, rdt)
    return RuleResult(
        weight=jnp.exp(t), value=value, weights=jnp.where(seen, jnp.exp(t_all[order]), nan),
        values=jnp.where(seen, f_all[order], nan), weights_converged=ok_all[order] & seen, x=x_best,
        iterations=i_best, converged=ok_all[best], at_bound=at_bound, solves=jnp.asarray(E * (1 + count), jnp.int32),
    )
