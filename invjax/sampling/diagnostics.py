r"""Chain diagnostics from a scalar trace: autocorrelation and effective sample size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def autocorrelation(trace: Float[Array, "*chains n"], max_lag: int | None = None) -> Float[Array, " lags"]:
    r"""Normalised autocorrelation ``rho_k`` of a scalar chain, averaged over leading chain axes.

    .. math:: \rho_k = \frac{\sum_{i} (u_i - \bar u)(u_{i+k} - \bar u)}{\sum_i (u_i - \bar u)^2}

    computed by FFT (zero-padded, so no wrap-around), each chain about its own mean.

    Arguments:
        trace: ``(..., n)`` real samples; leading axes are chains (their ACFs are averaged).
        max_lag: last lag returned (default ``n - 1``; static int).

    Returns:
        ``(max_lag + 1,)`` with ``rho_0 = 1``.

    Example:
        >>> import jax.numpy as jnp
        >>> from invjax.sampling import autocorrelation
        >>> autocorrelation(jnp.array([1.0, -1.0, 1.0, -1.0]), max_lag=1)
        Array([ 1.  , -0.75], dtype=float32)
    """
    u = jnp.asarray(trace)
    n = u.shape[-1]
    max_lag = n - 1 if max_lag is None else min(int(max_lag), n - 1)
    u = u - jnp.mean(u, axis=-1, keepdims=True)
    size = 1 << (2 * n - 1).bit_length()
    f = jnp.fft.rfft(u, size, axis=-1)
    acov = jnp.fft.irfft(f * jnp.conj(f), size, axis=-1)[..., : max_lag + 1]
    rho = acov / jnp.where(acov[..., :1] > 0, acov[..., :1], 1)
    return jnp.mean(rho.reshape(-1, max_lag + 1), axis=0).astype(u.dtype)


def effective_sample_size(trace: Float[Array, "*chains n"]) -> Float[Array, ""]:
    r"""Effective sample size of a scalar chain (all chains together) by Geyer's initial positive
    sequence (Geyer, Statist. Sci. 1992): ``ESS = N / tau``, ``tau = -1 + 2 sum_k Gamma_k`` with
    ``Gamma_k = rho_{2k} + rho_{2k+1}`` summed while positive, ``N`` the total sample count.
    ``tau`` is floored at ``1 / log10(N)`` (as Stan), so the ESS is at most ``N log10 N``.

    Arguments:
        trace: ``(..., n)`` real samples of a scalar; leading axes are chains (``N`` counts
            all of them).

    Returns:
        The ESS, a real scalar ``()`` of the trace's dtype.

    Example:
        >>> import jax
        >>> from invjax.sampling import effective_sample_size
        >>> float(effective_sample_size(jax.random.normal(jax.random.PRNGKey(0), (4000,)))) > 3000
        True
    """
    u = jnp.asarray(trace)
    n = u.shape[-1]
    total = u.size
    rho = autocorrelation(u, n - 1)
    m = (n - 1) // 2 * 2
    pairs = rho[:m].reshape(-1, 2).sum(axis=1)
    keep = jnp.cumprod(pairs > 0)
    tau = -1 + 2 * jnp.sum(pairs * keep)
    tau = jnp.maximum(tau, 1.0 / jnp.log10(jnp.asarray(max(total, 10), tau.dtype)))  # as Stan: ESS <= N log10 N
    return total / tau
