r"""Empirical-Bayes regularisation weight by stochastic approximation (SAPG)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Inexact, PRNGKeyArray

from ..functionals import L1, L21, TV, SquaredL2
from ..functionals.base import Scaled
from ..sampling import MYULA, AbstractSampler, PnPULA
from ..sampling.accumulate import moments_init, moments_update
from ._common import RuleResult, as_data, check_bounds, check_count, check_make_problem, check_sigma, keyword_only

_DEGREE = ((SquaredL2, 2.0), (TV, 1.0), (L1, 1.0), (L21, 1.0))


class SapgResult(RuleResult):
    """Output of :func:`sapg`: a :class:`RuleResult` with ``weight`` the estimate (the geometric
    mean of the iterates' weights over the averaging window), ``value`` the window's mean of the
    normalised score ``1 - k theta R(X) / d`` (0 at the marginal-likelihood maximiser), ``x`` the
    chain's mean over the window (an MMSE estimate near ``weight``), ``iterations`` the SAPG
    iterations, ``converged`` the window's two halves agreeing within ``rtol``, ``at_bound`` the
    estimate at an end of ``bounds``, and:

    Arguments:
        weight, value, x, iterations, converged, at_bound: as above (:class:`RuleResult`):
            real scalars ``weight`` and ``value``, ``x`` of shape ``op.in_shape``, int32
            ``iterations``, bool ``converged`` and ``at_bound``; ``weights``, ``values``,
            ``weights_converged`` and ``solves`` are ``None``.
        history: ``(iters,)`` real, the weight after each iteration.
        average: ``(iters,)`` real, the running geometric mean over the window (NaN before it;
            its last entry is ``weight``).
        change: real scalar, ``|mean(second half) / mean(first half) - 1|`` of the window
            (geometric means).
        gradient_evaluations: the sampler's drift evaluations, burn-in included (static int:
            ``burn_in + inner * iters`` for MYULA).

    Example:
        >>> make = lambda w, y: ij.Problem(ij.operators.Identity((64,)), y, ij.functionals.SquaredL2(),
        ...                                weight=w)
        >>> y = 2.0 * jax.random.normal(jax.random.PRNGKey(0), (64,))
        >>> res = ij.tuning.sapg(make, y, 1.0, jax.random.PRNGKey(1), iters=500)  # window: 250..499
        >>> res.x.shape, res.history.shape, res.iterations.item(), res.gradient_evaluations
        ((64,), (500,), 500, 1200)
        >>> bool(jnp.isnan(res.average[:250]).all()), bool(res.average[-1] == res.weight)
        (True, True)
    """

    history: Float[Array, " iters"] = None
    average: Float[Array, " iters"] = None
    change: Float[Array, ""] = None
    gradient_evaluations: int = eqx.field(static=True, default=0)


def _degree(reg, homogeneity):
    if homogeneity is not None:
        k = float(homogeneity)
        if not k > 0:
            raise ValueError(f"sapg: `homogeneity` must be > 0, got {homogeneity!r}")
        return k
    inner = reg.functional if isinstance(reg, Scaled) else reg
    for cls, k in _DEGREE:
        if isinstance(inner, cls):
            return k
    raise ValueError(
        f"sapg: cannot tell the homogeneity degree of {type(inner).__name__}; pass `homogeneity` (k with "
        "R(c x) = c^k R(x): 1 for TV/L1/L21, 2 for SquaredL2)"
    )


@keyword_only("tuning.sapg", 4, "sapg(make_problem, y, sigma, key, init=..., sampler=..., iters=..., ...)")
def sapg(
    make_problem,
    y: Inexact[Array, "..."],
    sigma,
    key: PRNGKeyArray,
    *,
    init=1.0,
    sampler: AbstractSampler | None = None,
    iters: int = 2000,
    burn_in: int = 200,
    inner: int = 2,
    step: float = 5.0,
    decay: float = 0.8,
    average_from: int | None = None,
    homogeneity: float | None = None,
    bounds=(1e-8, 1e8),
    rtol: float = 0.05,
) -> SapgResult:
    r"""Weight by maximum marginal likelihood: stochastic approximation proximal gradient (Vidal,
    De Bortoli, Pereyra & Durmus, "Maximum likelihood estimation of regularisation parameters in
    high-dimensional inverse problems: an empirical Bayesian approach", SIAM J. Imaging Sci.
    13(4), 2020).

    With the prior ``p(x | theta) = exp(-theta R(x)) / Z(theta)``, ``theta = w / sigma^2`` (the
    Problem's weight ``w``), and ``R`` positively homogeneous of degree ``k`` (``R(c x) = c^k
    R(x)``), ``Z(theta) = C theta^{-d/k}``, so

    .. math:: \frac{\partial}{\partial \log\theta} \log p(y \mid \theta)
              = \frac{d}{k} - \theta\, \mathbb{E}[R(X) \mid y, \theta] ,

    estimated with one sample of a Langevin chain that targets ``p(x | y, theta_n)`` and
    follows ``theta``. The iteration, in ``u = log w`` (``d`` the number of real unknowns),

    .. math:: u_{n+1} = \Pi\Big[u_n + \gamma_n \Big(1 - \frac{k\, \theta_n R(X_{n+1})}{d}\Big)\Big],
              \qquad \gamma_n = \texttt{step}\,(n + 1)^{-\texttt{decay}},

    each increment clipped to ``[-1, 1]`` and ``u`` to ``log bounds``; the estimate is the
    geometric mean of the weights from ``average_from`` on.

    Arguments:
        make_problem: ``(weight, y) -> Problem`` with a regulariser (one image).
        y: the measurements.
        sigma: noise standard deviation ``> 0``.
        key: a ``jax.random`` key.
        init: the starting weight (default 1).
        sampler: a :class:`~invjax.sampling.MYULA`, :class:`~invjax.sampling.ULA` or
            :class:`~invjax.sampling.SKROCK` (default ``MYULA(step_factor=0.25)``), rebuilt at
            each iteration's weight (its default step follows the weight where the Lipschitz
            constant does). The marginal likelihood is flat in ``w``: a sampler's bias in
            ``E[R(X)]`` moves the root several times as much (on the 32x32 Gaussian test, ULA at
            ``delta = 1 / L``, 3 % variance bias, put the weight 25 % low; at ``0.25 / L``
            within 4 %).
        iters: SAPG iterations (default 2000).
        burn_in: chain steps at ``init`` before the first update (default 200).
        inner: chain steps per update (default 2).
        step, decay: ``gamma_n = step (n + 1)^-decay`` (defaults 5, 0.8).
        average_from: first iteration of the averaging window (default ``iters // 2``).
        homogeneity: ``k`` (default: known for TV, L1, L21 (1) and SquaredL2 (2)).
        bounds: ``(low, high)`` for the weight (default ``(1e-8, 1e8)``).
        rtol: the window's halves must agree to this for ``converged`` (default 0.05).

    Returns:
        A :class:`SapgResult` (``.weight``, ``.history``, ``.converged``, ...).

    Raises:
        ValueError: ``sigma <= 0``, bad counts or bounds, an unknown homogeneity degree.
        TypeError: ``make_problem`` not returning a Problem with a regulariser; a PnP sampler.

    Example:
        >>> import invjax as ij
        >>> make = lambda w, y: ij.Problem(ij.operators.Identity((64,)), y, ij.functionals.SquaredL2(), weight=w)
        >>> k1, k2 = jax.random.split(jax.random.PRNGKey(0))
        >>> x = 2.0 * jax.random.normal(k1, (64,))             # prior N(0, sigma^2 / w), w = 0.25
        >>> y = x + jax.random.normal(k2, (64,))
        >>> res = ij.tuning.sapg(make, y, 1.0, jax.random.PRNGKey(1), iters=500)
        >>> 0.1 < float(res.weight) < 0.5
        True
    """
    who = "sapg"
    y = as_data(y, who)
    sigma = check_sigma(sigma, y, who)
    iters = check_count(iters, "iters", who)
    burn_in = check_count(burn_in, "burn_in", who, minimum=0)
    inner = check_count(inner, "inner", who)
    average_from = iters // 2 if average_from is None else check_count(average_from, "average_from", who, minimum=0)
    if average_from >= iters:
        raise ValueError(f"sapg: `average_from` must be < iters = {iters}, got {average_from}")
    lo, hi = check_bounds(bounds, who)
    sampler = MYULA(step_factor=0.25) if sampler is None else sampler
    if not isinstance(sampler, AbstractSampler) or isinstance(sampler, PnPULA):
        raise TypeError(f"sapg: `sampler` must be an invjax MYULA, ULA or SKROCK, got {type(sampler).__name__}")
    problem = check_make_problem(make_problem, jnp.asarray(init, sigma.dtype), y, who)
    if problem.regularizer is None:
        raise TypeError("sapg: `make_problem` must return a Problem with a regularizer (the prior whose weight is estimated)")
    k = _degree(problem.regularizer, homogeneity)
    for name, v in (("step", step), ("decay", decay), ("rtol", rtol)):
        if not float(v) > 0:
            raise ValueError(f"sapg: `{name}` must be > 0, got {v!r}")
    return _sapg(make_problem, y, sigma, key, jnp.asarray(init, sigma.dtype), sampler, iters=iters,
                         burn_in=burn_in, inner=inner, step=float(step), decay=float(decay), average_from=average_from,
                 k=k, lo=lo, hi=hi, rtol=float(rtol))


@eqx.filter_jit
def _sapg(make_problem, y, sigma, key, init, sampler, *, iters, burn_in, inner, step, decay, average_from, k, lo, hi, rtol):
    real = sigma.dtype
    s2 = jnp.square(sigma)
    u0 = jnp.log(jnp.clip(init, lo, hi))
    alg0 = sampler.build(make_problem(jnp.exp(u0), y), sigma)
    state = alg0.init(alg0.default_position)
    d = state.position.size * (2 if jnp.issubdtype(state.position.dtype, jnp.complexfloating) else 1)
    key_burn, key_run = jax.random.split(key)

    def burn(t, state):
        return alg0.step(jax.random.fold_in(key_burn, t), state)[0]

    state = lax.fori_loop(0, burn_in, burn, state)

    def body(carry, n):
        u, state, acc = carry
        w = jnp.exp(u)
        problem = make_problem(w, y)
        alg = sampler.build(problem, sigma)
        kn = jax.random.fold_in(key_run, n)
        state = lax.fori_loop(0, inner, lambda j, s: alg.step(jax.random.fold_in(kn, j), s)[0], state)
        x = state.position
        r = problem.regularizer(x)  # R(x), unweighted
        g = 1 - k * (w / s2) * r / d
        gamma = step * (n + 1.0) ** (-decay)
        u = jnp.clip(u + jnp.clip(gamma * g, -1.0, 1.0), jnp.log(lo), jnp.log(hi)).astype(real)
        acc = moments_update(acc, x, n >= average_from)
        return (u, state, acc), (u, g)

    (_, _, acc), (us, gs) = lax.scan(body, (u0.astype(real), state, moments_init(state.position)),
                                     jnp.arange(iters, dtype=real))
    idx = jnp.arange(iters)
    in_window = idx >= average_from
    counts = jnp.cumsum(in_window)
    running = jnp.cumsum(jnp.where(in_window, us, 0)) / jnp.maximum(counts, 1)
    average = jnp.where(in_window, jnp.exp(running), jnp.nan)
    window = us[average_from:]
    half = window.shape[0] // 2
    first, second = jnp.mean(window[:half]) if half else window[0], jnp.mean(window[half:])
    change = jnp.abs(jnp.exp(second - first) - 1)
    weight = average[-1]
    at_bound = (weight <= lo * (1 + 1e-6)) | (weight >= hi * (1 - 1e-6))
    grads = alg0.gradient_evaluations * (burn_in + inner * iters)
    return SapgResult(weight=weight, value=jnp.mean(gs[average_from:]), x=acc.mean, iterations=jnp.asarray(iters, jnp.int32),
                      converged=change <= rtol, at_bound=at_bound, history=jnp.exp(us), average=average, change=change,
                      gradient_evaluations=grads)
