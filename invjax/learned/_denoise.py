"""The ``denoise(y, sigma)`` contract shared by the learned denoisers: one image or a batch,
one noise level or one per image, checked with errors naming the argument."""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..operators.base import concrete_or_none


def check_sigma(sigma, who: str, batch: int | None):
    """``sigma`` as a real array of shape ``()`` or ``(batch,)``; concrete values must be finite
    and ``> 0`` (``ValueError`` naming ``sigma``), traced ones are checked at run time."""
    s = jnp.asarray(sigma)
    if not (jnp.issubdtype(s.dtype, jnp.floating) or jnp.issubdtype(s.dtype, jnp.integer)):
        raise TypeError(f"{who}: `sigma` must be a real noise level, got dtype {s.dtype.name}")
    shapes = ((),) if batch is None else ((), (batch,))
    if s.shape not in shapes:
        want = "a scalar" if batch is None else f"a scalar or shape ({batch},) (one per image)"
        raise ValueError(f"{who}: `sigma` must be {want}, got shape {s.shape}")
    known = concrete_or_none(s)
    if known is None:
        return eqx.error_if(s, jnp.any(~(s > 0)), f"{who}: `sigma` must be > 0 (a noise standard deviation)")
    if not np.all(np.isfinite(known)) or np.any(known <= 0):
        shown = known.item() if known.ndim == 0 else f"an array with min {np.nanmin(known)}"
        raise ValueError(f"{who}: `sigma` must be finite and > 0 (a noise standard deviation), got {shown}")
    return s


def batched(fn: Callable, y, sigma, *, image_ndim: int, who: str, sigma_required: bool = True):
    """``fn(image, sigma)`` on one image of ``image_ndim`` axes, or mapped over a leading batch
    axis (``sigma`` a scalar or one per image)."""
    y = jnp.asarray(y)
    if jnp.issubdtype(y.dtype, jnp.complexfloating):
        raise TypeError(f"{who}: `y` must be real, got dtype {y.dtype.name}")
    if y.ndim not in (image_ndim, image_ndim + 1):
        one = "(H, W)" if image_ndim == 2 else "(C, H, W)"
        many = "(B, H, W)" if image_ndim == 2 else "(B, C, H, W)"
        raise ValueError(f"{who}: `y` must be one image {one} or a batch {many}, got shape {y.shape}")
    batch = y.shape[0] if y.ndim == image_ndim + 1 else None
    if sigma is None:
        if sigma_required:
            raise TypeError(f"{who}: `sigma` (the noise standard deviation) is required, got None")
        return fn(y, None) if batch is None else jax.vmap(lambda im: fn(im, None))(y)
    s = check_sigma(sigma, who, batch)
    if batch is None:
        return fn(y, s)
    return jax.vmap(fn)(y, jnp.broadcast_to(s, (batch,)))
