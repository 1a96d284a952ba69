"""The one 2-D convolution every invjax network uses: channels-last, fast inside loop bodies.

XLA:CPU runs channels-first convolutions (``NCHW``/``OIHW``), and JAX's own transposed
convolution (the input gradient), 5-100x slower inside ``lax.while_loop``/``lax.scan`` bodies
than outside them (a DnCNN call measured 0.7 s vs 11 ms channels-last; see DESIGN.md). Every
network applied inside a solver's loop (plug-and-play, DEQ, MoDL, samplers) therefore computes
with activations ``(N, H, W, C)`` and kernels ``(kh, kw, C_in, C_out)``, and its input gradient
is written as a forward convolution with the flipped, transposed kernel (exact for odd kernels
with "same" zero padding).

Kernels are *stored* in the layout each network documents (DnCNN keeps ``(C_out, C_in, kh,
kw)`` for its spectral normalisation and its shipped files); :func:`hwio` converts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_DIMS = ("NHWC", "HWIO", "NHWC")


def hwio(w: jax.Array) -> jax.Array:
    """``(C_out, C_in, kh, kw) -> (kh, kw, C_in, C_out)``."""
    return jnp.transpose(w, (2, 3, 1, 0))


def _plain(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DIMS)


@jax.custom_vjp
def _conv_same(x, w):
    return _plain(x, w)


def _fwd(x, w):
    return _plain(x, w), (x, w)


def _bwd(res, g):
    x, w = res
    # input gradient as a forward convolution (odd kernel, symmetric "same" padding: exact)
    dx = _plain(g, jnp.flip(w, (0, 1)).swapaxes(2, 3))
    dw = jax.vjp(lambda w_: _plain(x, w_), w)[1](g)[0]
    return dx, dw


_conv_same.defvjp(_fwd, _bwd)


def conv2d(x: jax.Array, w: jax.Array, b: jax.Array | None = None) -> jax.Array:
    """Cross-correlation with zero "same" padding, channels-last, plus an optional bias.

    Args:
        x: ``(N, H, W, C_in)`` activations.
        w: ``(kh, kw, C_in, C_out)`` kernel, ``kh`` and ``kw`` odd.
        b: ``(C_out,)`` bias or ``None``.

    Returns:
        ``(N, H, W, C_out)`` in ``x``'s dtype. Reverse-mode differentiable in ``x`` and ``w``
        (a custom VJP; forward mode is not defined for it).
    """
    if w.shape[0] % 2 == 0 or w.shape[1] % 2 == 0:
        raise ValueError(f"conv2d: kernel sides must be odd, got kernel shape {w.shape}")
    out = _conv_same(x, w.astype(x.dtype))
    return out if b is None else out + b.astype(x.dtype)


def pixel_unshuffle(x: jax.Array, factor: int = 2) -> jax.Array:
    """``(N, H, W, C) -> (N, H/f, W/f, f*f*C)``: each ``f x f`` block becomes channels (the
    sub-images of FFDNet). ``H`` and ``W`` must be multiples of ``f``."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // factor, factor, w // factor, factor, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h // factor, w // factor, factor * factor * c)


def pixel_shuffle(x: jax.Array, factor: int = 2) -> jax.Array:
    """Inverse of :func:`pixel_unshuffle`: ``(N, h, w, f*f*C) -> (N, f*h, f*w, C)``."""
    n, h, w, cc = x.shape
    c = cc // (factor * factor)
    x = x.reshape(n, h, w, factor, factor, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h * factor, w * factor, c)
