r"""One driver: a Langevin chain in one compiled loop, streaming moments, chains vmapped."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import ndtri
from jaxtyping import Array, Bool, Float, Inexact, Int, PRNGKeyArray

from ..solvers import Problem
from ._target import AbstractSampler, check_sigma
from .accumulate import BatchMeans, Moments, batch_init, batch_update, moments_init, moments_merge, moments_update, variance
from .diagnostics import autocorrelation, effective_sample_size


class Posterior(eqx.Module):
    r"""What :func:`sample` returns: streaming posterior summaries of ``p(x | y)``.

    Arguments:
        mean: the posterior mean (MMSE estimate), shape ``op.in_shape``, the image dtype.
        var: the per-pixel posterior variance (unbiased over the pooled samples), shape
            ``op.in_shape``, real.
        ess: per-pixel effective sample size by batch means (all chains together), shape
            ``op.in_shape``, real.
        count: samples folded in, a real scalar (all chains; fewer than requested if a chain
            diverged).
        potential_trace: ``(n_chains, n_samples)`` real values of ``U(x) = objective / sigma^2``
            at the kept samples (``None`` with ``trace=False``); NaN after a divergence.
        diverged: ``(n_chains,)`` bool, whether a chain produced a non-finite state (it then
            stopped: its later steps are ignored).
        diverged_at: ``(n_chains,)`` int32, the step (burn-in included) where it did, ``-1`` if not.
        step_size, smoothing, lipschitz: real scalars, the sampler's step ``delta``,
            Moreau-Yosida ``lambda`` (0 without an envelope) and the Lipschitz constant of
            ``grad U`` that set its defaults.
        gradient_evaluations: drift evaluations over all steps and chains (static int).
        problem, sigma: the sampled problem and noise level (for :func:`credible_region_test`).

    Example:
        ``U(x) = (||x - y||^2 + ||x||^2) / 2`` with ``y = 1`` is Gaussian with mean ``1/2`` and
        precision 2; ULA with step ``delta`` keeps the mean and has stationary variance
        ``1 / (2 (1 - delta))``, ``2/3`` at ``delta = 1/4``:

        >>> problem = ij.Problem(ij.operators.Identity((3,)), jnp.ones(3), ij.functionals.SquaredL2(),
        ...                      weight=1.0)
        >>> post = ij.sampling.sample(problem, ij.sampling.ULA(step=0.25), jax.random.PRNGKey(0),
        ...                           sigma=1.0, n_samples=2000, burn_in=50, n_chains=2)
        >>> post.mean.shape, post.potential_trace.shape, post.count.item(), post.diverged.tolist()
        ((3,), (2, 2000), 4000.0, [False, False])
        >>> bool(jnp.allclose(post.mean, 0.5, atol=0.1)), bool(jnp.allclose(post.var, 2 / 3, atol=0.1))
        (True, True)
        >>> low, high = post.interval(0.9)  # mean -+ 1.645 std
        >>> bool(jnp.allclose(high - low, 2 * 1.6449 * post.std, rtol=1e-4))
        True
    """

    mean: Array
    var: Array
    ess: Array
    count: Array
    potential_trace: Array | None
    diverged: Array
    diverged_at: Array
    step_size: Array
    smoothing: Array
    lipschitz: Array
    gradient_evaluations: int = eqx.field(static=True, default=0)
    problem: Problem | None = None
    sigma: Array | None = None

    @property
    def std(self) -> Array:
        """Per-pixel posterior standard deviation."""
        return jnp.sqrt(self.var)

    def interval(self, level: float = 0.9) -> tuple[Array, Array]:
        r"""Marginal credible interval per pixel at ``level`` (``0 < level < 1``):
        ``mean ± z std`` with ``z = Phi^{-1}((1 + level) / 2)`` (the Gaussian approximation of
        each marginal; exact for Gaussian posteriors).

        Arguments:
            level: the credible level (default 0.9).

        Returns:
            ``(low, high)``, each ``op.in_shape`` (real part for complex images).
        """
        if not 0 < float(level) < 1:
            raise ValueError(f"Posterior.interval: `level` must be in (0, 1), got {level!r}")
        z = ndtri(jnp.asarray((1 + float(level)) / 2, self.var.dtype))
        m = jnp.real(self.mean)
        return m - z * self.std, m + z * self.std

    def autocorrelation(self, max_lag: int = 100) -> Array:
        """Autocorrelation of the potential trace ``U(x_k)``, averaged over chains, lags
        ``0..max_lag`` (see :func:`autocorrelation`)."""
        if self.potential_trace is None:
            raise ValueError("Posterior.autocorrelation: the chain kept no trace (sample(..., trace=True))")
        return autocorrelation(self.potential_trace, max_lag)

    @property
    def ess_potential(self) -> Array:
        """Effective sample size of the potential trace (Geyer), all chains together."""
        if self.potential_trace is None:
            raise ValueError("Posterior.ess_potential: the chain kept no trace (sample(..., trace=True))")
        return effective_sample_size(self.potential_trace)


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"sample: `{name}` must be an int >= {low}, got {value!r}")
    return value


def sample(
    problem: Problem,
    sampler: AbstractSampler,
    key: PRNGKeyArray,
    *,
    sigma,
    n_samples: int,
    burn_in: int = 0,
    thin: int = 1,
    n_chains: int = 1,
    x0: Inexact[Array, "*chains ..."] | None = None,
    batches: int | None = None,
    trace: bool = True,
) -> Posterior:
    r"""Sample ``p(x | y) ∝ exp(-(F(A x; y) + w R(x)) / sigma^2)`` and summarise it on the fly.

    Each chain runs ``burn_in`` steps, then ``n_samples * thin`` steps of which every
    ``thin``-th is folded into Welford mean/variance and batch-means accumulators (one image
    each: memory does not grow with ``n_samples``). Chains run under ``vmap`` with independent
    keys and are merged at the end. The whole run is one compiled program (``lax.fori_loop``);
    ``jax.vmap`` over problems gives a batch of posteriors. A chain whose state becomes
    non-finite stops there and reports it (``diverged``, ``diverged_at``).

    Arguments:
        problem: the :class:`~invjax.Problem`; ``sigma`` turns its objective into ``U``.
        sampler: :class:`ULA`, :class:`MYULA`, :class:`SKROCK` or :class:`PnPULA`.
        key: a ``jax.random`` key.
        sigma: the noise standard deviation ``> 0`` (scalar).
        n_samples: samples kept per chain, ``>= 1``.
        burn_in: steps discarded first (default 0).
        thin: steps per kept sample (default 1).
        n_chains: independent chains (default 1).
        x0: start, ``op.in_shape`` or ``(n_chains,) + op.in_shape`` (default: the sampler's,
            ``A^H y / ||A||^2``).
        batches: number of batches for the batch-means ESS (default ``min(64, sqrt(n_samples))``).
        trace: keep ``U(x)`` at every kept sample (``n_samples`` scalars per chain; default True).

    Returns:
        A :class:`Posterior`.

    Raises:
        ValueError: ``n_samples < 1``, negative ``burn_in``, ``thin < 1``, ``n_chains < 1``,
            ``sigma <= 0``, an ``x0`` of the wrong shape.
        TypeError: a ``sampler`` that is not one, or a problem the sampler cannot sample.

    Example:
        >>> import invjax as ij
        >>> problem = ij.Problem(ij.operators.Identity((3,)), jnp.zeros(3), ij.functionals.SquaredL2(), weight=1.0)
        >>> post = ij.sampling.sample(problem, ij.sampling.ULA(step=0.05), jax.random.PRNGKey(0), sigma=1.0,
        ...                           n_samples=4000, burn_in=100)
        >>> bool(jnp.all(jnp.abs(post.var - 0.5) < 0.1))     # posterior N(0, 1/2)
        True
    """
    if not isinstance(sampler, AbstractSampler):
        raise TypeError(f"sample: `sampler` must be an invjax sampler (ULA, MYULA, SKROCK, PnPULA), got {type(sampler).__name__}")
    if not isinstance(problem, Problem):
        raise TypeError(f"sample: `problem` must be an invjax Problem, got {type(problem).__name__}")
    n_samples = _check_int(n_samples, "n_samples", 1)
    burn_in = _check_int(burn_in, "burn_in", 0)
    thin = _check_int(thin, "thin", 1)
    n_chains = _check_int(n_chains, "n_chains", 1)
    if batches is None:
        batches = max(1, min(64, math.isqrt(n_samples)))
    batches = _check_int(batches, "batches", 1)
    sigma = check_sigma(sigma, "sample")
    shape = tuple(problem.op.in_shape)
    if x0 is not None:
        x0 = jnp.asarray(x0)
        if tuple(x0.shape) not in (shape, (n_chains,) + shape):
            raise ValueError(f"sample: `x0` must have shape {shape} or {(n_chains,) + shape}, got {tuple(x0.shape)}")
    return _run(problem, sampler, key, sigma, x0, n_samples=n_samples, burn_in=burn_in, thin=thin,
                n_chains=n_chains, batches=batches, trace=bool(trace))


@eqx.filter_jit
def _run(problem, sampler, key, sigma, x0, *, n_samples, burn_in, thin, n_chains, batches, trace):
    alg = sampler.build(problem.checked(), sigma)
    size = max(1, n_samples // batches)
    start = alg.default_position if x0 is None else x0.astype(problem.op.dtype)
    starts = jnp.broadcast_to(start, (n_chains,) + tuple(problem.op.in_shape))
    keys = jax.random.split(key, n_chains)

    def advance(state, alive, died, k, t):
        new, _ = alg.step(k, state)
        ok = jnp.all(jnp.isfinite(new.position))
        go = alive & ok
        state = jax.tree.map(lambda a, b: jnp.where(go, a, b), new, state)
        died = jnp.where(alive & ~ok, t, died)
        return state, go, died

    def chain(key, x):
        # one loop over every step (burn-in and thinning included): one copy of the step in the
        # program, which halves the compile time of two nested loops
        state = alg.init(x)
        like = state.position
        real = jnp.finfo(like.dtype).dtype
        tr = jnp.full((n_samples if trace else 0,), jnp.nan, real)

        def record(t, state, alive, mom, bm, tr):
            i = (t - burn_in) // thin
            x = state.position
            mom = moments_update(mom, x, alive)
            bm = batch_update(bm, x, size, batches, alive)
            if trace:
                tr = tr.at[i].set(jnp.where(alive, alg.potential(x).astype(real), jnp.nan))
            return mom, bm, tr

        def body(t, carry):
            state, alive, died, mom, bm, tr = carry
            state, alive, died = advance(state, alive, died, jax.random.fold_in(key, t), t)
            kept = (t >= burn_in) & ((t - burn_in) % thin == thin - 1)
            mom, bm, tr = lax.cond(kept, record, lambda t, s, a, m, b, r: (m, b, r), t, state, alive, mom, bm, tr)
            return state, alive, died, mom, bm, tr

        init = (state, jnp.asarray(True), jnp.asarray(-1, jnp.int32), moments_init(like), batch_init(like), tr)
        _, alive, died, mom, bm, tr = lax.fori_loop(0, burn_in + n_samples * thin, body, init)
        return mom, bm.means, tr, ~alive, died

    if n_chains == 1:  # no vmap: a smaller program to compile
        mom, bmeans, tr, diverged, died = jax.tree.map(lambda a: a[None], chain(keys[0], starts[0]))
    else:
        mom, bmeans, tr, diverged, died = jax.vmap(chain)(keys, starts)
    mom = moments_merge(mom)
    bmeans = moments_merge(bmeans)
    var = variance(mom)
    ess = mom.count * var / (size * variance(bmeans))
    return Posterior(
        mean=mom.mean,
        var=var,
        ess=ess,
        count=mom.count,
        potential_trace=tr if trace else None,
        diverged=diverged,
        diverged_at=died,
        step_size=alg.step_size,
        smoothing=alg.smoothing,
        lipschitz=alg.lipschitz,
        gradient_evaluations=alg.gradient_evaluations * n_chains * (burn_in + n_samples * thin),
        problem=problem,
        sigma=sigma,
    )
