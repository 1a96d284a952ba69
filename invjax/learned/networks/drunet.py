r"""DRUNet: the noise-level-aware residual U-Net denoiser of Zhang, Li, Zuo, Zhang, Van Gool &
Timofte, "Plug-and-play image restoration with deep denoiser prior", IEEE TPAMI 44(10), 2022
(KAIR's ``UNetRes``).

The input is the image with a constant noise-level map ``sigma`` as an extra channel; four scales
of widths ``(64, 128, 256, 512)``, ``blocks`` residual blocks ``x + W_2 ReLU(W_1 x)`` per scale
(3x3 convolutions), 2x2 stride-2 convolutions down and 2x2 stride-2 transposed convolutions up,
skip connections added (not concatenated), no biases; the output is the denoised image itself
(not a residual). Convolutions run channels-last (:func:`~invjax.learned.networks._conv.conv2d`; the 2x2
stride-2 ones are exact reshapes and matrix products), so the network is fast inside solver loops.
Weights: :func:`invjax.learned.import_weights` ``("drunet", "drunet_gray.pth")``.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from ._conv import conv2d, hwio
from .._denoise import check_images, check_sigma, restore

__all__ = ["DRUNet"]


def _he(key, shape):
    fan_in = shape[1] * shape[2] * shape[3]
    return math.sqrt(2.0 / fan_in) * jax.random.normal(key, shape, jnp.float32)


class DRUNet(eqx.Module):
    r"""DRUNet denoiser ``D(y, sigma)`` (module docstring), bias-free.

    Arguments:
        channels: image channels ``C`` (default 1); the first convolution takes ``C + 1``.
        widths: feature channels of the four scales (default ``(64, 128, 256, 512)``).
        blocks: residual blocks per scale (default 4, as the released models).
        key: ``jax.random`` key for a He-normal initialisation (keyword, required).

    Weights are stored as torch does, ``(C_out, C_in, kh, kw)`` for convolutions and
    ``(C_in, C_out, 2, 2)`` for the transposed ones: ``head``, ``down[l] = (res, strided)``,
    ``body``, ``up[l] = (transposed, res)``, ``tail``, each ``res`` a tuple of ``(W_1, W_2)``.

    Shapes: as every invjax denoiser (:meth:`denoise`); any ``H, W`` (padded by edge replication
    to multiples of 8 and cropped back, as KAIR's test code).

    Raises:
        ValueError: ``widths`` not four ints ``>= 1``, ``blocks`` or ``channels`` not an int
            ``>= 1``.

    Example:
        >>> net = ij.learned.DRUNet(widths=(2, 2, 2, 2), blocks=1, key=jax.random.key(0))  # tiny
        >>> net.head.shape, net.tail.shape  # the head also takes the noise-level map
        ((2, 2, 3, 3), (1, 2, 3, 3))
    """

    head: jax.Array
    down: tuple
    body: tuple
    up: tuple
    tail: jax.Array
    channels: int = eqx.field(static=True)

    def __init__(self, channels: int = 1, widths=(64, 128, 256, 512), blocks: int = 4, *, key):
        widths = tuple(int(w) for w in widths)
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"DRUNet: `widths` must be four ints >= 1, got {widths!r}")
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
            raise ValueError(f"DRUNet: `blocks` must be an int >= 1, got {blocks!r}")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"DRUNet: `channels` must be an int >= 1, got {channels!r}")
        keys = iter(jax.random.split(key, 4 * blocks * 7 + 8))

        def res(w):
            return tuple((_he(next(keys), (w, w, 3, 3)), _he(next(keys), (w, w, 3, 3))) for _ in range(blocks))

        self.channels = channels
        self.head = _he(next(keys), (widths[0], channels + 1, 3, 3))
        self.down = tuple((res(widths[i]), _he(next(keys), (widths[i + 1], widths[i], 2, 2))) for i in range(3))
        self.body = res(widths[3])
        # transposed convolutions: (C_in, C_out, 2, 2), fan-in C_in * 4
        self.up = tuple(
            (_he(next(keys), (widths[i + 1], widths[i], 2, 2)), res(widths[i])) for i in reversed(range(3))
        )
        self.tail = _he(next(keys), (channels, widths[0], 3, 3))

    def denoise(self, y, sigma) -> jax.Array:
        """``D(y, sigma)`` for one image or a batch: grayscale ``(H, W)``/``(B, H, W)``,
        ``C``-channel ``(C, H, W)``/``(B, C, H, W)``; ``sigma`` (required) the noise standard
        deviation on the ``[0, 1]`` scale, a scalar or one per image. Shape and dtype of ``y``.

        Example:
            The network is bias-free and its activations are ReLUs, so
            ``D(a y, a sigma) = a D(y, sigma)`` for ``a > 0``:

            >>> net = ij.learned.DRUNet(widths=(2, 2, 2, 2), blocks=1, key=jax.random.key(0))
            >>> y = jnp.linspace(0, 1, 2 * 12 * 10).reshape(2, 12, 10)  # a batch; any H, W
            >>> x = net.denoise(y, 0.1)
            >>> x.shape, x.dtype
            ((2, 12, 10), dtype('float32'))
            >>> bool(jnp.allclose(net.denoise(2 * y, 0.2), 2 * x, atol=1e-6))
            True
        """
        who = "DRUNet.denoise"
        img, batch = check_images(y, channels=self.channels, who=who)
        if sigma is None:
            raise TypeError(f"{who}: `sigma` (the noise standard deviation) is required, got None")
        s = check_sigma(sigma, who, None if batch is None else img.shape[0])
        s = jnp.broadcast_to(jnp.asarray(s, img.dtype), (img.shape[0],))
        return restore(_apply(self, img, s), jnp.shape(y))

    def apply(self, img: jax.Array, sigma: jax.Array) -> jax.Array:
        """The unchecked network on ``img`` ``(B, C, H, W)`` with ``sigma`` ``(B,)``."""
        return _apply(self, img, sigma)


def _res(x, pairs):
    for w1, w2 in pairs:
        x = x + conv2d(jax.nn.relu(conv2d(x, hwio(w1).astype(x.dtype))), hwio(w2).astype(x.dtype))
    return x


def _down(x, w):
    """2x2 stride-2 convolution (no padding) as a reshape and a matrix product."""
    n, h, wd, c = x.shape
    blocks = x.reshape(n, h // 2, 2, wd // 2, 2, c)
    return jnp.einsum("niajbc,ocab->nijo", blocks, w.astype(x.dtype))


def _up(x, w):
    """2x2 stride-2 transposed convolution (torch's ``ConvTranspose2d``, weight ``(C_in, C_out,
    2, 2)``): every input pixel spreads into a 2x2 block."""
    n, h, wd, _ = x.shape
    out = jnp.einsum("nijc,coab->niajbo", x, w.astype(x.dtype))
    return out.reshape(n, 2 * h, 2 * wd, w.shape[1])


def _apply(net: DRUNet, img, sigma):
    height, width = img.shape[2:]
    ph, pw = -height % 8, -width % 8
    x = jnp.moveaxis(img, 1, -1)
    x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")  # as KAIR: replicate bottom/right
    smap = jnp.broadcast_to(jnp.asarray(sigma, x.dtype)[:, None, None, None], x.shape[:3] + (1,))
    x1 = conv2d(jnp.concatenate([x, smap], axis=-1), hwio(net.head).astype(x.dtype))
    skips = [x1]  # x1, x2, x3, x4: the outputs of the head and of each downsampling
    x = x1
    for res, w in net.down:
        x = _down(_res(x, res), w)
        skips.append(x)
    x = _res(x, net.body)
    # the decoder: up3(x + x4), up2(. + x3), up1(. + x2), tail(. + x1)
    for (w, res), skip in zip(net.up, reversed(skips[1:])):
        x = _res(_up(x + skip, w), res)
    x = conv2d(x + x1, hwio(net.tail).astype(x.dtype))
    return jnp.moveaxis(x[:, :height, :width], -1, 1)
