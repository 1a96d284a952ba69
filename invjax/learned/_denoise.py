"""The ``denoise(y, sigma)`` contract shared by the learned denoisers and priors: one image or a
batch, one noise level or one per image, checked with errors naming the argument.

Images are float arrays on the ``[0, 1]`` scale (noise may push values somewhat outside it);
``sigma`` is the noise standard deviation on that scale. Plausible mistakes are errors, never
silent garbage:

* an RGB(A) image ``(H, W, 3)`` given to a grayscale model, or a channels-last image to a
  ``C``-channel model (the channel axis goes first: ``(C, H, W)``);
* an integer image (8-bit ``0..255``): convert with ``y.astype(np.float32) / 255``;
* values far outside ``[0, 1]`` (``max |y| > 4``: a ``0..255`` float image);
* ``sigma > 1`` (a level on the ``0..255`` scale: pass ``sigma / 255``), ``sigma <= 0``;
* non-finite pixels or noise levels.

Shapes and dtypes are checked at trace time; values where they are known at trace time (the
usual case outside ``jax.jit``), else at run time with :func:`equinox.error_if`, whose message
is part of the raised error's text under ``jax.jit``.
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..operators.base import concrete_or_none

#: largest plausible ``max |y|`` of an image on the [0, 1] scale, noise included
MAX_ABS_VALUE = 4.0


def check_sigma(sigma, who: str, batch: int | None):
    """``sigma`` as a real array of shape ``()`` or ``(batch,)``; values must be finite, ``> 0``
    and ``<= 1`` (the ``[0, 1]`` image scale): ``ValueError`` naming ``sigma`` when known at trace
    time, a run-time error otherwise."""
    s = jnp.asarray(sigma)
    if not (jnp.issubdtype(s.dtype, jnp.floating) or jnp.issubdtype(s.dtype, jnp.integer)):
        raise TypeError(f"{who}: `sigma` must be a real noise level, got dtype {s.dtype.name}")
    shapes = ((),) if batch is None else ((), (batch,))
    if s.shape not in shapes:
        want = "a scalar" if batch is None else f"a scalar or shape ({batch},) (one per image)"
        raise ValueError(f"{who}: `sigma` must be {want}, got shape {s.shape}")
    known = concrete_or_none(s)
    units = (f"{who}: `sigma` must be <= 1: it is the noise standard deviation on the [0, 1] image scale "
             "(a level on the 0..255 scale, e.g. 25, is passed as 25 / 255)")
    if known is None:
        s = eqx.error_if(s, jnp.any(~(s > 0)), f"{who}: `sigma` must be finite and > 0 (a noise standard deviation)")
        return eqx.error_if(s, jnp.any(s > 1), units)
    if not np.all(np.isfinite(known)) or np.any(known <= 0):
        shown = known.item() if known.ndim == 0 else f"an array with min {np.nanmin(known)}"
        raise ValueError(f"{who}: `sigma` must be finite and > 0 (a noise standard deviation), got {shown}")
    if np.any(known > 1):
        raise ValueError(f"{units}; got {known.item() if known.ndim == 0 else np.max(known)}")
    return s


def check_images(y, *, channels: int, who: str):
    """Check ``y`` against the image contract (module docstring).

    Returns ``(y, batch)``: ``y`` as a float array of shape ``(B, C, H, W)`` and ``batch`` the
    leading shape to restore (``None`` for one image). Accepted shapes: ``(H, W)`` and ``(B, H,
    W)`` when ``channels == 1``; ``(C, H, W)`` and ``(B, C, H, W)`` for any ``C``.
    """
    y = jnp.asarray(y)
    if jnp.issubdtype(y.dtype, jnp.complexfloating):
        raise TypeError(f"{who}: `y` must be real, got dtype {y.dtype.name}")
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise TypeError(
            f"{who}: `y` must be a float image on the [0, 1] scale, got dtype {y.dtype.name}; for an 8-bit "
            "image pass y.astype(np.float32) / 255"
        )
    shape = tuple(y.shape)
    rgb_like = len(shape) == 3 and shape[-1] in (3, 4) and shape[0] > 4 and shape[1] > 4
    if channels == 1 and rgb_like:
        raise ValueError(
            f"{who}: `y` of shape {shape} looks like an RGB(A) image (H, W, {shape[-1]}), but the model is "
            "grayscale (one channel); convert it first, e.g. skimage.color.rgb2gray(y), or denoise each "
            f"channel as a batch: jnp.moveaxis(y, -1, 0) of shape {(shape[-1],) + shape[:2]}"
        )
    if channels > 1 and len(shape) >= 3 and shape[-1] == channels and shape[-3] != channels:
        raise ValueError(
            f"{who}: `y` of shape {shape} looks channels-last; the model takes the channel axis first, "
            f"(C, H, W) or (B, C, H, W) with C = {channels}: pass jnp.moveaxis(y, -1, -3)"
        )
    if channels == 1 and len(shape) == 2:
        out, batch = y[None, None], None
    elif channels == 1 and len(shape) == 3:
        out, batch = y[:, None], shape[:1]
    elif len(shape) == 3 and shape[0] == channels:
        out, batch = y[None], None
    elif len(shape) == 4 and shape[1] == channels:
        out, batch = y, shape[:1]
    else:
        want = "(H, W), (B, H, W), (1, H, W) or (B, 1, H, W)" if channels == 1 else f"({channels}, H, W) or (B, {channels}, H, W)"
        raise ValueError(f"{who}: `y` must have shape {want} (the model has {channels} channel(s)), got shape {shape}")
    known = concrete_or_none(out)
    big = (f"{who}: `y` has values far outside the [0, 1] image scale (max |y| > {MAX_ABS_VALUE:g}); "
           "for a 0..255 image pass y / 255 (and sigma / 255)")
    nan = f"{who}: `y` has non-finite values (NaN or inf)"
    if known is None:
        out = eqx.error_if(out, ~jnp.all(jnp.isfinite(out)), nan)
        return eqx.error_if(out, jnp.max(jnp.abs(out)) > MAX_ABS_VALUE, big), batch
    if not np.all(np.isfinite(known)):
        raise ValueError(f"{nan}: {int(np.sum(~np.isfinite(known)))} of {known.size} pixels")
    if known.size and np.max(np.abs(known)) > MAX_ABS_VALUE:
        raise ValueError(f"{big}; got max |y| = {np.max(np.abs(known)):.4g}")
    return out, batch


def restore(x, shape):
    """Inverse of :func:`check_images`' reshaping: ``(B, C, H, W)`` back to the caller's
    ``shape`` (every accepted layout is a reshape of it)."""
    return jnp.reshape(x, shape)


def batched(fn: Callable, y, sigma, *, image_ndim: int, who: str, sigma_required: bool = True, channels: int = 1):
    """``fn(image, sigma)`` on one image of ``image_ndim`` axes, or mapped over a leading batch
    axis (``sigma`` a scalar or one per image), after the checks of the contract."""
    img, batch = check_images(y, channels=channels, who=who)
    # back to what fn takes: (H, W) images for image_ndim == 2, (C, H, W) otherwise
    imgs = img[:, 0] if image_ndim == 2 else img
    n = imgs.shape[0]
    if sigma is None:
        if sigma_required:
            raise TypeError(f"{who}: `sigma` (the noise standard deviation) is required, got None")
        out = jax.vmap(lambda im: fn(im, None))(imgs)
    else:
        s = check_sigma(sigma, who, None if batch is None else n)
        out = jax.vmap(fn)(imgs, jnp.broadcast_to(s, (n,)))
    return out if batch is not None else out[0]
