"""Noise models: additive white Gaussian, Poisson (photon counting) and Poisson–Gaussian.

Every function takes an explicit ``jax.random`` key and is pure: the same key and inputs give
the same draw, and a function can be wrapped in ``jax.jit`` and ``jax.vmap`` (over keys,
signals or noise levels). The result has the shape and dtype of the clean signal ``y``
(float32 by default, float64 under ``jax_enable_x64``; integer ``y`` is promoted to the
default float dtype).

Noise levels (``sigma``, ``photons``) are scalars or arrays that broadcast to ``y.shape``.
Invalid levels raise ``ValueError`` naming the argument when they are known at trace time
(concrete values); traced levels are checked at run time with :func:`equinox.error_if`.
The signal ``y`` must be finite (and nonnegative for Poisson): NumPy or Python data is
checked at once (``ValueError``), a JAX array on device with :func:`equinox.error_if`
(an ``EquinoxRuntimeError``, or a ``JaxRuntimeError`` carrying the message under
``jax.jit``), so that a device array is never copied back to the host just to be checked.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import invjax as ij
    >>> z = ij.noise.gaussian(jax.random.key(0), jnp.ones((64, 64)), sigma=0.1)   # y + 0.1 N(0, I)
    >>> z.shape, z.dtype
    ((64, 64), dtype('float32'))
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Inexact, Num, PRNGKeyArray, Real

__all__ = ["gaussian", "poisson", "poisson_gaussian"]


_NOT_FINITE = "{who}: argument `y` contains NaN or Inf"
_NEGATIVE = "{who}: argument `y` must be nonnegative"
_BAD_LEVEL = "{who}: argument `{name}` must be finite and {rule}"


def _signal(y, who: str, *, real: bool, nonnegative: bool) -> jax.Array:
    """``y`` as an inexact JAX array with NaN/Inf (and, if asked, negative) values rejected.

    NumPy or Python data is checked on the host (``ValueError``); a JAX array on device with
    :func:`equinox.error_if`, which copies back one flag rather than all of ``y``.
    """
    host = None if isinstance(y, jax.Array) else np.asarray(y)
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.inexact):
        y = y.astype(jnp.result_type(float))
    if real and jnp.issubdtype(y.dtype, jnp.complexfloating):
        raise TypeError(f"{who}: argument `y` must be real, got {y.dtype.name}")
    if host is None:
        not_finite = ~jnp.all(jnp.isfinite(y))
        if not nonnegative:
            return eqx.error_if(y, not_finite, _NOT_FINITE.format(who=who))
        # One check for both conditions: each error_if is a host callback.
        negative = jnp.any(y < 0)
        messages = (_NOT_FINITE.format(who=who), _NEGATIVE.format(who=who))
        return eqx.branched_error_if(
            y, not_finite | negative, jnp.where(not_finite, 0, 1), messages
        )
    if not np.all(np.isfinite(host)):
        raise ValueError(_NOT_FINITE.format(who=who))
    if nonnegative and np.any(host < 0):
        raise ValueError(_NEGATIVE.format(who=who) + f", got min(y) = {host.min()}")
    return y


def _bad_level(value, positive: bool, xp):
    out_of_range = value <= 0 if positive else value < 0
    return xp.any(out_of_range | ~xp.isfinite(value))


def _level(value, name: str, who: str, y: jax.Array, *, positive: bool) -> jax.Array:
    """A noise level, real, finite, > 0 or >= 0, broadcastable to ``y.shape``, as an array of
    ``y``'s real dtype. Concrete levels are checked now (``ValueError``), traced ones at run
    time (:func:`equinox.error_if`)."""
    value = jnp.asarray(value)
    if jnp.issubdtype(value.dtype, jnp.complexfloating):
        raise TypeError(f"{who}: argument `{name}` must be real, got {value.dtype.name}")
    try:
        shape = jnp.broadcast_shapes(value.shape, y.shape)
    except ValueError:
        shape = None
    if shape != y.shape:
        raise ValueError(
            f"{who}: argument `{name}` of shape {value.shape} does not broadcast to "
            f"the shape of `y`, {y.shape}"
        )
    value = value.astype(jnp.finfo(y.dtype).dtype)
    msg = _BAD_LEVEL.format(who=who, name=name, rule="positive" if positive else "nonnegative")
    if isinstance(value, jax.core.Tracer):
        return eqx.error_if(value, _bad_level(value, positive, jnp), msg)
    concrete = np.asarray(value)  # levels are small: scalars or per-pixel maps
    if _bad_level(concrete, positive, np):
        shown = concrete if concrete.size <= 8 else "an array with invalid entries"
        raise ValueError(f"{msg}, got {shown}")
    return value


def gaussian(
    key: PRNGKeyArray, y: Num[ArrayLike, "*shape"], sigma: Real[ArrayLike, "*#shape"]
) -> Inexact[Array, "*shape"]:
    r"""Add white Gaussian noise: :math:`z = y + \sigma\, n`, :math:`n \sim \mathcal N(0, I)`.

    For complex ``y`` the noise is circularly-symmetric complex Gaussian,
    :math:`n \sim \mathcal{CN}(0, I)`: ``sigma`` is the standard deviation of the *complex*
    value, :math:`\mathbb E|z - y|^2 = \sigma^2`, so the real and imaginary parts each have
    standard deviation :math:`\sigma/\sqrt 2` (the convention of ``jax.random.normal`` with a
    complex dtype).

    Differentiable in ``y`` (the Jacobian is the identity) and in ``sigma``.

    Arguments:
        key: a ``jax.random`` key.
        y: the clean signal, any shape, real or complex.
        sigma: the noise standard deviation, ``>= 0``; a scalar or an array that broadcasts
            to ``y.shape`` (e.g. per-pixel).

    Returns:
        The noisy signal, shape and dtype of ``y`` (integers promote to the default float).

    Raises:
        ValueError: if ``sigma`` is negative, not finite or does not broadcast to ``y``, or
            ``y`` (NumPy or Python data) is not finite; a JAX ``y`` is checked on device
            (``EquinoxRuntimeError``).
        TypeError: if ``sigma`` is complex.

    Example:
        >>> y = jnp.zeros(100_000)
        >>> z = ij.noise.gaussian(jax.random.key(0), y, sigma=0.1)
        >>> print(f"{z.std():.2f}")
        0.10
    """
    who = "noise.gaussian"
    y = _signal(y, who, real=False, nonnegative=False)
    sigma = _level(sigma, "sigma", who, y, positive=False)
    return _gaussian(key, y, sigma)


def _gaussian(key, y: jax.Array, sigma: jax.Array) -> jax.Array:
    # Drawn flat and reshaped: XLA on CPU compiles a flat threefry draw faster than an n-D one.
    noise = jax.random.normal(key, (y.size,), dtype=y.dtype).reshape(y.shape)
    return y + sigma * noise


def poisson(
    key: PRNGKeyArray, y: Real[ArrayLike, "*shape"], photons: Real[ArrayLike, "*#shape"]
) -> Float[Array, "*shape"]:
    r"""Poisson (photon-counting) noise on the scale of ``y``.

    .. math::
        z = \frac{k}{p}, \qquad k \sim \operatorname{Poisson}(p\, y)

    where :math:`p` is ``photons``: a pixel of value ``y`` receives on average ``photons * y``
    counts, so :math:`\mathbb E z = y` and :math:`\operatorname{Var} z = y / p`. More photons,
    less noise (SNR :math:`= \sqrt{p y}`). Every entry of the result is an integer divided by
    ``photons``.

    The counts are drawn by ``jax.random.poisson``, which needs a threefry key (the default)
    and takes the rate in float32, as integers (int32, or int64 under ``jax_enable_x64``):
    keep ``photons * y`` well below ``2**31``. Sampling is not differentiable:
    ``jax.grad`` through this function gives a zero gradient with respect to ``y`` and
    ``photons``.

    Arguments:
        key: a ``jax.random`` key.
        y: the clean, nonnegative, real signal, any shape.
        photons: the expected number of counts for a pixel of value 1, ``> 0``; a scalar or an
            array that broadcasts to ``y.shape``.

    Returns:
        The noisy signal ``counts / photons``, shape and dtype of ``y``.

    Raises:
        ValueError: if ``photons`` is not positive and finite or does not broadcast to ``y``,
            or ``y`` (NumPy or Python data) is negative or not finite; a JAX ``y`` is checked
            on device (``EquinoxRuntimeError``).
        TypeError: if ``y`` or ``photons`` is complex.

    Example:
        >>> z = ij.noise.poisson(jax.random.key(0), jnp.full(4, 0.5), photons=10.0)
        >>> bool(jnp.all(z * 10 == jnp.round(z * 10)))       # whole counts over 10
        True
    """
    who = "noise.poisson"
    y = _signal(y, who, real=True, nonnegative=True)
    photons = _level(photons, "photons", who, y, positive=True)
    return _poisson(key, y, photons)


def _poisson(key, y: jax.Array, photons: jax.Array) -> jax.Array:
    # Sampling a discrete law has no useful derivative; stop_gradient makes that a clean
    # zero rather than an error from differentiating the sampler's rejection loop.
    y, photons = jax.lax.stop_gradient((y, photons))
    rate = jnp.broadcast_to(photons * y, y.shape).reshape(-1)
    counts = jax.random.poisson(key, rate, shape=rate.shape).reshape(y.shape)
    return counts.astype(y.dtype) / photons


def poisson_gaussian(
    key: PRNGKeyArray,
    y: Real[ArrayLike, "*shape"],
    photons: Real[ArrayLike, "*#shape"],
    sigma: Real[ArrayLike, "*#shape"],
) -> Float[Array, "*shape"]:
    r"""Poisson–Gaussian noise: photon counting plus additive Gaussian read-out noise.

    .. math::
        z = \frac{k}{p} + \sigma\, n, \qquad k \sim \operatorname{Poisson}(p\, y),
        \quad n \sim \mathcal N(0, I)

    with :math:`p` = ``photons``, so :math:`\mathbb E z = y` and
    :math:`\operatorname{Var} z = y / p + \sigma^2`. ``sigma`` is on the scale of ``y`` (not of
    the counts). Differentiable in ``sigma``; the Poisson part has zero gradient (see
    :func:`poisson`).

    Arguments:
        key: a ``jax.random`` key; split internally for the two parts.
        y: the clean, nonnegative, real signal, any shape.
        photons: the expected number of counts for a pixel of value 1, ``> 0``; a scalar or an
            array that broadcasts to ``y.shape``.
        sigma: the Gaussian standard deviation, ``>= 0``, on the scale of ``y``; a scalar or
            an array that broadcasts to ``y.shape``.

    Returns:
        The noisy signal, shape and dtype of ``y``.

    Raises:
        ValueError: as :func:`poisson` and :func:`gaussian`, for ``y``, ``photons`` and
            ``sigma``.
        TypeError: if an argument is complex.

    Example:
        >>> z = ij.noise.poisson_gaussian(jax.random.key(0), jnp.ones((8, 8)), 1000.0, 0.01)
        >>> z.shape
        (8, 8)
    """
    who = "noise.poisson_gaussian"
    y = _signal(y, who, real=True, nonnegative=True)
    photons = _level(photons, "photons", who, y, positive=True)
    sigma = _level(sigma, "sigma", who, y, positive=False)
    key_poisson, key_gauss = jax.random.split(key)
    return _gaussian(key_gauss, _poisson(key_poisson, y, photons), sigma)
