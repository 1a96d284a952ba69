r"""Stein's unbiased risk estimate (SURE) for any reconstruction, linear or not.

For :math:`y = A x + n`, :math:`n \sim \mathcal N(0, \sigma^2 I_m)`, and a reconstruction
:math:`\hat x_\lambda(y)` (any solver), Stein's lemma (Stein, "Estimation of the mean of a
multivariate normal distribution", Ann. Stat. 9(6), 1981) gives an unbiased estimate of the
(weighted) predicted risk :math:`\mathbb E\,\|W A(\hat x_\lambda - x)\|^2` that does not need
:math:`x`:

.. math::
    \mathrm{SURE}(\lambda) = \frac1{m_W}\Big( \|W(A\hat x_\lambda - y)\|^2
        - \sigma^2 \operatorname{tr}(W^\top W)
        + 2 \sigma^2 \operatorname{tr}\big(W^\top W J_\lambda\big) \Big),
    \qquad J_\lambda = \frac{\partial (A \hat x_\lambda)}{\partial y},

with :math:`m_W` the size of :math:`W`'s output. For :math:`W = I` (default) this is the
classical :math:`\frac1m(\|A\hat x - y\|^2 - m\sigma^2 + 2\sigma^2 \operatorname{div}_y A\hat x)`,
the mean squared error in the measurement domain (for denoising, ``A = I``, the image MSE).
The trace is estimated by Monte Carlo (Ramani, Blu & Unser, "Monte-Carlo SURE: a black-box
optimization of regularization parameters for general denoising algorithms", IEEE TIP 17(9),
2008; Hutchinson 1989): with probes :math:`b` of zero mean and identity covariance
(Rademacher by default),

.. math:: \operatorname{tr}\big(W^\top W (2 J - I)\big) \approx
          \tfrac1P \textstyle\sum_p (W b_p)^\top W (2 J b_p - b_p),

where :math:`J b` is an exact Jacobian-vector product through the solver (``jax.jvp``: the
implicit function theorem for ``diff="implicit"``, forward mode through the iterations for
``diff="unroll"``), not a finite difference. For ``W = I`` the term ``tr(W^T W) = m`` is used
exactly.

For deblurring, the measurement-domain risk weights errors by the blur and can prefer a weight
far from the image-domain optimum. A weighting that maps back to the image,
:math:`W = (A^\top A + \varepsilon I)^{-1} A^\top` (:func:`regularized_inverse`), estimates
:math:`\|W A (\hat x - x)\|^2`, the image error on the frequencies the blur keeps (a projected
SURE in the spirit of Eldar, "Generalized SURE for exponential families", IEEE TSP 57(2), 2009,
and Giryes, Elad & Eldar, ACHA 30(3), 2011); ``eps`` trades fidelity to the image error against
the variance of the estimate.

:func:`sure` minimises the estimate over :math:`t = \log\lambda`: a coarse grid (vmapped)
then golden-section search, with the same probes at every weight (common random numbers keep
the curve smooth). The rule jits and vmaps over a batch of images.
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp

from ..solvers import solve
from ._common import (
    RuleInfo,
    as_arrays,
    as_data,
    check_bounds,
    check_count,
    check_make_problem,
    check_sigma,
    check_solver,
    fail_if_nothing_evaluated,
    minimize_log,
    real_dtype,
    warn_if_unconverged,
)

_PROBES = ("rademacher", "gaussian")


def sure(
    make_problem,
    y,
    sigma,
    key,
    solver,
    *,
    bounds=(1e-6, 1e2),
    weighting=None,
    probes: int = 1,
    probe: str = "rademacher",
    grid_points: int = 9,
    iters: int = 10,
    return_info: bool = False,
):
    """Weight minimising SURE for one image (``jax.vmap`` it over a batch of images and keys).

    Args:
        make_problem: ``(weight, y) -> Problem``; ``weight`` is a positive scalar.
        y: measurements, ``op.out_shape``, real.
        sigma: noise standard deviation, a positive scalar.
        key: a ``jax.random`` key for the probes (explicit: the same key gives the same choice).
        solver: any invjax solver whose solution differentiates in ``y`` (every solver with
            ``diff="implicit"`` or ``"unroll"``).
        bounds: search interval ``(low, high)`` of the weight (default ``(1e-6, 1e2)``).
        weighting: ``None`` (the measurement-domain risk) or a linear map ``W`` (a callable
            on ``out_shape`` arrays, e.g. :func:`regularized_inverse`).
        probes: Monte-Carlo probes per evaluation (default 1; each costs a tangent solve),
            ``jax.random.rademacher(key, (probes,) + y.shape)`` (or ``normal``).
        probe: ``"rademacher"`` (default, lower variance) or ``"gaussian"``.
        grid_points: coarse grid size over ``bounds`` (default 9, >= 3).
        iters: golden-section evaluations after the grid (default 10; 0 keeps the grid point).
        return_info: also return a :class:`RuleInfo` (``value``: the SURE risk at the weight;
            ``solves``: forward plus tangent solves).

    Returns:
        The weight (a scalar), or ``(weight, info)``.

    Example:
        >>> make = lambda w, y: ij.Problem(A, y, ij.functionals.TV(), w)
        >>> keys = jax.random.split(jax.random.key(0), len(ys))
        >>> ws = jax.jit(jax.vmap(lambda y, k: ij.tuning.sure(make, y, 0.01, k, solver)))(ys, keys)
    """
    who = "tuning.sure"
    y, sigma, weighting = _check(who, make_problem, y, sigma, solver, weighting, probes, probe)
    lo, hi = check_bounds(bounds, who)
    grid_points = check_count(grid_points, "grid_points", who, minimum=3)
    iters = check_count(iters, "iters", who, minimum=0)
    info = _sure(make_problem, solver, weighting, y, sigma, key, lo, hi, probes, probe, grid_points, iters)
    warn_if_unconverged(info, who)
    return (info.weight, info) if return_info else info.weight


def sure_risk(make_problem, weight, y, sigma, key, solver, *, weighting=None, probes: int = 1, probe: str = "rademacher"):
    """The SURE estimate at one weight (any shape: scalar, per direction, an image).

    Returns the risk per measurement (per output entry of ``weighting``), an estimate of
    ``||W A (x_hat - x)||^2 / m_W`` (see the module docstring). Differentiable in ``weight``
    where the solver's derivatives are (second order through the solver).

    Args:
        make_problem, y, sigma, key, solver, weighting, probes, probe: as in :func:`sure`.
        weight: the weight passed to ``make_problem``.
    """
    who = "tuning.sure_risk"
    y, sigma, weighting = _check(who, make_problem, y, sigma, solver, weighting, probes, probe, weight=weight)
    return _risk_at(make_problem, solver, weighting, y, sigma, key, probes, probe, as_arrays(weight))


@eqx.filter_jit
def _risk_at(make_problem, solver, weighting, y, sigma, key, probes, probe, weight):
    return _risk(make_problem, solver, weighting, y, sigma, _probes(key, y, probes, probe), weight)[0]


def regularized_inverse(op, eps: float = 1e-2):
    r"""The weighting ``W = (A^T A + eps ||A||^2 I)^{-1} A^T`` for a circulant operator, by FFT.

    ``W A`` is the filter :math:`|a_k|^2 / (|a_k|^2 + \varepsilon \max|a|^2)` on frequency ``k``:
    the identity where the blur keeps the signal, zero where it kills it. Passed to :func:`sure`
    as ``weighting``, the risk becomes the image-domain error on the kept frequencies.

    Args:
        op: a 2-D real operator with a Fourier symbol (``op.fourier_symbol()``, e.g.
            :class:`~invjax.operators.Convolution`).
        eps: relative regularisation, ``> 0`` (default ``1e-2``).

    Returns:
        A callable ``W(v)`` on ``op.out_shape`` arrays returning ``op.in_shape`` arrays.
    """
    who = "tuning.regularized_inverse"
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"{who}: `eps` must be a finite number > 0, got {eps!r}")
    symbol = op.fourier_symbol() if hasattr(op, "fourier_symbol") else None
    if symbol is None or len(op.in_shape) != 2 or tuple(op.in_shape) != tuple(op.out_shape):
        raise TypeError(f"{who}: needs a 2-D circulant operator with a Fourier symbol, got {type(op).__name__}")
    a = symbol[0] if symbol.ndim == 3 else symbol
    a2 = jnp.abs(a) ** 2
    filt = jnp.conj(a) / (a2 + eps * jnp.max(a2))
    shape = tuple(op.in_shape)

    def weighting(v):
        return jnp.fft.irfft2(jnp.fft.rfft2(v) * filt.astype(jnp.result_type(v.dtype, jnp.complex64)), s=shape).astype(v.dtype)

    return weighting


# ---- internals -------------------------------------------------------------------------------


def _check(who, make_problem, y, sigma, solver, weighting, probes, probe, weight=None):
    check_solver(solver, who)
    y = as_data(y, who)
    if jnp.issubdtype(y.dtype, jnp.complexfloating):
        raise TypeError(f"{who}: complex measurements are not supported (real Gaussian noise), got {y.dtype}")
    weight = jnp.ones((), real_dtype(y)) if weight is None else weight
    problem = check_make_problem(make_problem, weight, y, who)
    if tuple(y.shape) != tuple(problem.op.out_shape):
        raise ValueError(
            f"{who}: `y` must have the operator's out_shape {tuple(problem.op.out_shape)}, got {tuple(y.shape)} "
            "(for a batch, jax.vmap the rule)"
        )
    if weighting is not None and not callable(weighting):
        raise TypeError(f"{who}: `weighting` must be None or a linear callable on measurements")
    check_count(probes, "probes", who)
    if probe not in _PROBES:
        raise ValueError(f"{who}: `probe` must be one of {_PROBES}, got {probe!r}")
    return y, check_sigma(sigma, y, who), weighting


def _probes(key, y, probes, probe):
    shape = (probes,) + tuple(y.shape)
    if probe == "rademacher":
        return jax.random.rademacher(key, shape, dtype=y.dtype)
    return jax.random.normal(key, shape, dtype=y.dtype)


def _risk(make_problem, solver, weighting, y, sigma, b, weight):
    """``(SURE, converged)``: the estimate and whether the solve at ``weight`` met its tol (and
    the derivative solves theirs, where the solver gives NaN for a failed one)."""

    def forward(data):
        problem = make_problem(weight, data)
        sol = solve(problem, solver)
        # the flag rides along as a real output (its tangent is zero) so that one linearisation
        # gives both
        return problem.op.mv(sol.x), sol.stats.converged.astype(real_dtype(data))

    (ax, conv), jvp = jax.linearize(forward, y)
    jb = jax.vmap(lambda v: jvp(v)[0])(b)
    r = ax - y
    if weighting is None:
        size = y.size
        fit = jnp.sum(r**2)
        trace = jnp.mean(jnp.sum(b * jb, axis=tuple(range(1, b.ndim)))) * 2 - size
    else:
        wr = weighting(r)
        size = wr.size
        fit = jnp.sum(jnp.abs(wr) ** 2)
        wb = jax.vmap(weighting)(b)
        w2jb = jax.vmap(weighting)(2 * jb - b)
        trace = jnp.mean(jnp.sum(jnp.real(jnp.conj(wb) * w2jb), axis=tuple(range(1, wb.ndim))))
    value = ((fit + sigma**2 * trace) / size).astype(real_dtype(y))
    return value, (conv > 0.5) & jnp.isfinite(value)


@eqx.filter_jit
def _sure(make_problem, solver, weighting, y, sigma, key, lo, hi, probes, probe, grid_points, iters):
    rdt = real_dtype(y)
    b = _probes(key, y, probes, probe)
    # a failed implicit-derivative solve marks that weight's evaluation as failed (NaN: skipped
    # by the search) instead of stopping the whole search with an error
    solver = dataclasses.replace(solver, adjoint_failure="nan")

    def objective(t):
        return _risk(make_problem, solver, weighting, y, sigma, b, jnp.exp(t).astype(rdt))

    t, value, evals, at_bound, converged = minimize_log(objective, lo, hi, grid_points, iters, rdt)
    t = fail_if_nothing_evaluated(t, value, "tuning.sure")
    return RuleInfo(
        weight=jnp.exp(t), value=value, solves=(evals * (1 + probes)).astype(jnp.int32), at_bound=at_bound,
        converged=converged,
    )
