r"""Streaming posterior moments: Welford's mean/variance and batch means, merged across chains.

Samples never sit in memory: a chain folds each one into running sums whose size is that of one
image. ``Moments`` holds ``(n, mean, M2)`` with ``M2 = sum (x_i - mean)^2`` (Welford, 1962);
two of them merge by Chan, Golub & LeVeque's pairwise formula. ``BatchMeans`` folds the means
of consecutive batches of ``b`` samples into another ``Moments``: the variance of batch means,
``b var_bm / var``, estimates the integrated autocorrelation time per pixel, hence the
effective sample size ``n var / (b var_bm)`` (the batch-means method, Flegal & Jones, Ann.
Statist. 2010).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Moments(NamedTuple):
    """Running count, mean and sum of squared deviations (``M2``) of a stream of arrays: the
    accumulator :func:`~invjax.sampling.sample` folds each kept sample into (Welford's update).

    Arguments:
        count: samples folded in, a real scalar ``()`` (the real dtype of the samples).
        mean: their mean, the shape and dtype of one sample (complex stays complex).
        m2: ``sum_i |x_i - mean|^2``, the shape of one sample, real; the unbiased variance is
            ``m2 / (count - 1)``.

    Example:
        >>> from invjax.sampling.accumulate import moments_init, moments_update, variance
        >>> xs = jnp.array([[1.0, 2.0], [3.0, 6.0], [5.0, 7.0]])  # three samples of shape (2,)
        >>> acc = moments_init(xs[0])
        >>> for x in xs:
        ...     acc = moments_update(acc, x)
        >>> acc.count.item(), acc.mean.tolist(), acc.m2.tolist()
        (3.0, [3.0, 5.0], [8.0, 14.0])
        >>> np.allclose(variance(acc), np.var(np.asarray(xs), axis=0, ddof=1))
        True
    """

    count: jax.Array
    mean: jax.Array
    m2: jax.Array


def moments_init(like: jax.Array) -> Moments:
    real = jnp.finfo(like.dtype).dtype
    return Moments(jnp.zeros((), real), jnp.zeros_like(like), jnp.zeros(like.shape, real))


def moments_update(acc: Moments, x: jax.Array, keep=True) -> Moments:
    """Welford's update by ``x`` (skipped where ``keep`` is False)."""
    n = acc.count + 1
    delta = x - acc.mean
    mean = acc.mean + delta / n.astype(acc.mean.dtype)
    m2 = acc.m2 + jnp.real(jnp.conj(delta) * (x - mean))
    new = Moments(n, mean, m2)
    return jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, acc)


def moments_merge(acc: Moments, axis: int = 0) -> Moments:
    """Merge moments stacked along ``axis`` (one per chain) into one."""
    counts = acc.count
    n = jnp.sum(counts, axis=axis)
    shape = counts.shape + (1,) * (acc.mean.ndim - counts.ndim)
    w = (counts / jnp.where(n > 0, n, 1)).reshape(shape)
    mean = jnp.sum(w.astype(acc.mean.dtype) * acc.mean, axis=axis)
    dev = jnp.abs(acc.mean - mean) ** 2
    m2 = jnp.sum(acc.m2, axis=axis) + jnp.sum(counts.reshape(shape) * dev, axis=axis)
    return Moments(n, mean, m2)


def variance(acc: Moments) -> jax.Array:
    """The unbiased sample variance ``M2 / (n - 1)`` (NaN below two samples)."""
    return acc.m2 / jnp.where(acc.count > 1, acc.count - 1, jnp.nan)


class BatchMeans(NamedTuple):
    """Partial sum of the current batch, its fill, and the moments of completed batch means."""

    partial: jax.Array
    filled: jax.Array
    means: Moments


def batch_init(like: jax.Array) -> BatchMeans:
    return BatchMeans(jnp.zeros_like(like), jnp.zeros((), jnp.int32), moments_init(like))


def batch_update(acc: BatchMeans, x: jax.Array, size: int, n_batches: int, keep=True) -> BatchMeans:
    """Add ``x`` to the current batch of ``size`` samples; a full batch's mean joins
    ``means`` (at most ``n_batches`` batches are kept; later samples are ignored)."""
    room = acc.means.count < n_batches
    keep = keep & room
    partial = jnp.where(keep, acc.partial + x, acc.partial)
    filled = jnp.where(keep, acc.filled + 1, acc.filled)
    full = filled == size
    means = moments_update(acc.means, partial / size, keep & full)
    partial = jnp.where(full, jnp.zeros_like(partial), partial)
    filled = jnp.where(full, 0, filled)
    return BatchMeans(partial, filled, means)
