r"""Pereyra's highest-posterior-density credible-region test of a structure."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Inexact

from .driver import Posterior


class RegionTest(NamedTuple):
    """Outcome of :func:`credible_region_test` (its fields, in order).

    Arguments:
        reject: boolean scalar ``()``, ``True`` when ``x_alternative`` lies outside the HPD
            region: the data reject it at level ``alpha`` (so a structure it lacks, or adds, is
            supported by the data).
        potential: ``U(x_alternative)``, a real scalar ``()`` (``inf`` outside a constraint).
        threshold: ``gamma_alpha``, the ``1 - alpha`` quantile of ``U`` over the chain's samples,
            a real scalar ``()``.
        alpha: the test's level (a Python float).

    Example:
        ``U(x) = (||x - y||^2 + ||x||^2) / 2`` with ``y = 1``, three pixels, ``sigma = 1``:
        ``U(3 * 1) = 3 (4 + 9) / 2 = 19.5``, far above the posterior's 99 % quantile of ``U``:

        >>> problem = ij.Problem(ij.operators.Identity((3,)), jnp.ones(3), ij.functionals.SquaredL2(),
        ...                      weight=1.0)
        >>> post = ij.sampling.sample(problem, ij.sampling.ULA(step=0.25), jax.random.PRNGKey(0),
        ...                           sigma=1.0, n_samples=2000, burn_in=50)
        >>> test = ij.sampling.credible_region_test(post, 3.0 * jnp.ones(3))
        >>> float(test.potential), bool(test.reject), bool(test.threshold < 19.5), test.alpha
        (19.5, True, True, 0.01)
    """

    reject: Array
    potential: Array
    threshold: Array
    alpha: float


def credible_region_test(post: Posterior, x_alternative: Inexact[Array, "..."], alpha: float = 0.01) -> RegionTest:
    r"""Test whether an alternative image is compatible with the posterior.

    The ``1 - alpha`` highest-posterior-density region is ``{x : U(x) <= gamma_alpha}`` with
    ``U = objective / sigma^2`` and ``gamma_alpha`` chosen so the region has posterior mass
    ``1 - alpha`` (Pereyra, "Maximum-a-posteriori estimation with Bayesian confidence regions",
    SIAM J. Imaging Sci. 2017). It is estimated here from the chain itself: ``gamma_alpha`` is the
    empirical ``1 - alpha`` quantile of ``U(x_k)`` over the kept samples (Cai, Pereyra & McEwen,
    Inverse Problems 2018), rather than the paper's conservative concentration bound. To test a
    structure (a lesion, an edge), remove it from an estimate (inpaint it with its surroundings)
    and pass the result: if it falls outside the region, the data support the structure.

    Arguments:
        post: a :class:`Posterior` sampled with ``trace=True``.
        x_alternative: the image to test, ``op.in_shape``.
        alpha: the level, ``0 < alpha < 1`` (default 0.01: the 99 % region).

    Returns:
        A :class:`RegionTest`.

    Raises:
        ValueError: no trace, ``alpha`` outside ``(0, 1)``, ``x_alternative`` of the wrong shape.

    Example:
        >>> import invjax as ij
        >>> problem = ij.Problem(ij.operators.Identity((16,)), jnp.zeros(16), ij.functionals.SquaredL2(), weight=1.0)
        >>> post = ij.sampling.sample(problem, ij.sampling.ULA(step=0.05), jax.random.PRNGKey(0), sigma=1.0,
        ...                           n_samples=2000, burn_in=100)
        >>> bool(ij.sampling.credible_region_test(post, 3.0 * jnp.ones(16)).reject)
        True
    """
    if not isinstance(post, Posterior):
        raise TypeError(f"credible_region_test: `post` must be a Posterior from sample(), got {type(post).__name__}")
    if post.potential_trace is None:
        raise ValueError("credible_region_test: `post` kept no trace of U (sample(..., trace=True))")
    if not 0 < float(alpha) < 1:
        raise ValueError(f"credible_region_test: `alpha` must be in (0, 1), got {alpha!r}")
    x = jnp.asarray(x_alternative)
    shape = tuple(post.problem.op.in_shape)
    if tuple(x.shape) != shape:
        raise ValueError(f"credible_region_test: `x_alternative` must have shape {shape}, got {tuple(x.shape)}")
    u = post.problem.objective(x.astype(post.problem.op.dtype)) / jnp.square(post.sigma)
    if post.problem.constraint is not None:
        u = jnp.where(jnp.isfinite(post.problem.constraint(x)), u, jnp.inf)
    trace = post.potential_trace.reshape(-1)
    gamma = jnp.nanquantile(trace, 1 - float(alpha))
    return RegionTest(u > gamma, u, gamma, float(alpha))
