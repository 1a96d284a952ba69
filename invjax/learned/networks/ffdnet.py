r"""FFDNet-style denoiser: a CNN on four half-resolution sub-images plus a noise-level map.

Zhang, Zuo & Zhang, "FFDNet: toward a fast and flexible solution for CNN-based image
denoising", IEEE Trans. Image Process. 27(9), 2018. The noisy image ``y`` (``C`` channels) is
split by :func:`~invjax.learned.networks._conv.pixel_unshuffle` into ``4C`` sub-images of half the side,
a constant (or per-pixel) map of the noise level ``sigma`` is appended, and ``depth`` 3x3
convolutions with ReLU between them map these ``4C + 1`` channels to ``4C``, which are shuffled
back to full resolution:

.. math:: \hat x = D(y, \sigma) = y - S^{-1}\big(N([S y, \sigma])\big),

with ``S`` the 2x2 space-to-depth split. Working at half resolution makes a layer of width
``w`` cost a quarter of the same layer of DnCNN and doubles the receptive field. The paper's
network predicts ``x`` directly; this one predicts the noise (a residual), which trained faster
here. The paper's grayscale model has ``depth=15, width=64`` (BSD68, sigma = 25: 29.19 dB).

Odd image sides are handled by reflecting one row/column before the split and cropping after.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

from ..._misc import positive_int
from ._conv import conv2d, pixel_shuffle, pixel_unshuffle
from .._denoise import check_images, check_sigma, restore

__all__ = ["FFDNet"]


class FFDNet(eqx.Module):
    r"""FFDNet-style residual denoiser with a noise-level input (see the module docstring).

    Arguments:
        channels: image channels ``C`` (default 1).
        depth: convolutions (default 15, the paper's grayscale network), ``>= 2``.
        width: feature channels of the hidden layers (default 64).
        dtype: parameter dtype (default float32); at call time the parameters are cast to the
            input's precision.
        key: ``jax.random`` key for the He-normal initialisation (keyword, required).

    Kernels are stored channels-last, ``(3, 3, C_in, C_out)`` (the layout the convolutions run
    in, :mod:`invjax.learned.networks._conv`).

    Raises:
        ValueError: ``channels`` or ``width`` below 1, ``depth`` below 2.
        TypeError: a non-floating ``dtype``.

    Example:
        A new network is ``FFDNet(key=jax.random.PRNGKey(0))`` (its random initialisation
        compiles for seconds); the shipped one is trained (:func:`~invjax.learned.pretrained`):

        >>> net = ij.learned.pretrained("ffdnet")
        >>> net.depth, net.width, net.channels
        (15, 64, 1)
        >>> x = net.denoise(jnp.full((3, 15, 16), 0.5), 0.1)  # a batch of three; odd sides work
        >>> x.shape, x.dtype
        ((3, 15, 16), dtype('float32'))
    """

    weights: tuple[jax.Array, ...]
    biases: tuple[jax.Array, ...]
    channels: int = eqx.field(static=True)

    def __init__(self, channels: int = 1, depth: int = 15, width: int = 64, *, dtype=jnp.float32, key):
        channels = positive_int(channels, "channels", "FFDNet")
        depth = positive_int(depth, "depth", "FFDNet", 2)
        width = positive_int(width, "width", "FFDNet")
        dtype = jnp.dtype(dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"FFDNet: `dtype` must be a real floating dtype, got {dtype.name}")
        sizes = [4 * channels + 1] + [width] * (depth - 1) + [4 * channels]
        keys = jax.random.split(key, depth)
        ws = []
        for i, (k, c_in, c_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
            std = math.sqrt(2.0 / (9 * c_in)) * (0.1 if i == depth - 1 else 1.0)  # He; a small last layer
            ws.append(std * jax.random.normal(k, (3, 3, c_in, c_out), dtype))
        self.weights = tuple(ws)
        self.biases = tuple(jnp.zeros((c,), dtype) for c in sizes[1:])
        self.channels = channels

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def width(self) -> int:
        return int(self.weights[0].shape[-1])

    def denoise(self, y, sigma) -> jax.Array:
        """The denoised image(s) at noise level ``sigma``.

        Arguments:
            y: float image(s) on the ``[0, 1]`` scale: ``(H, W)`` or ``(B, H, W)`` for a
                grayscale model, ``(C, H, W)`` or ``(B, C, H, W)`` (any ``H, W >= 2``).
            sigma: noise standard deviation on the same scale, ``0 < sigma <= 1``: a scalar or
                one per image ``(B,)``.

        Returns:
            The shape and dtype of ``y``.

        Raises:
            ValueError: a wrong shape (an RGB image to a grayscale model included), values far
                outside ``[0, 1]``, non-finite pixels, ``sigma`` out of range or shape.
            TypeError: an integer, complex or missing input.

        Example:
            >>> net = ij.learned.pretrained("ffdnet")  # the shipped network (depth 15, width 64)
            >>> x = ij.phantoms.shepp_logan(32)
            >>> y = x + 0.2 * np.random.default_rng(0).standard_normal(x.shape, np.float32)
            >>> xhat = net.denoise(y, 0.2)
            >>> xhat.shape, xhat.dtype
            ((32, 32), dtype('float32'))
            >>> bool(ij.metrics.psnr(xhat, x) > ij.metrics.psnr(y, x) + 3)  # over 3 dB gained
            True
        """
        img, batch = check_images(y, channels=self.channels, who="FFDNet.denoise")
        if sigma is None:
            raise TypeError("FFDNet.denoise: `sigma` (the noise standard deviation) is required, got None")
        s = check_sigma(sigma, "FFDNet.denoise", None if batch is None else img.shape[0])
        s = jnp.broadcast_to(jnp.asarray(s, img.dtype), (img.shape[0],))
        return restore(self.apply(img, s), jnp.shape(y))

    def __call__(self, y, sigma) -> jax.Array:
        """One image ``(H, W)`` / ``(C, H, W)`` (or a batch) at noise level ``sigma``: :meth:`denoise`."""
        return self.denoise(y, sigma)

    def apply(self, img: jax.Array, sigma: jax.Array) -> jax.Array:
        """The unchecked network on ``img`` ``(B, C, H, W)`` with ``sigma`` ``(B,)`` or a map
        ``(B, H, W)``: the fast path used inside solvers and training (no input checks)."""
        b, c, h, w = img.shape
        x = jnp.moveaxis(img, 1, -1)  # (B, H, W, C)
        ph, pw = h % 2, w % 2
        if ph or pw:
            x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect")
        sub = pixel_unshuffle(x)  # (B, h2, w2, 4C)
        s = jnp.asarray(sigma, img.dtype)
        if s.ndim == 1:
            smap = jnp.broadcast_to(s[:, None, None, None], sub.shape[:3] + (1,))
        else:  # a per-pixel map: its mean over each 2x2 block
            sm = jnp.pad(s, ((0, 0), (0, ph), (0, pw)), mode="reflect")[..., None]
            smap = jnp.mean(pixel_unshuffle(sm), axis=-1, keepdims=True)
        h_ = jnp.concatenate([sub, smap], axis=-1)
        for i, (wt, bs) in enumerate(zip(self.weights, self.biases)):
            h_ = conv2d(h_, wt, bs)
            if i < len(self.weights) - 1:
                h_ = jax.nn.relu(h_)
        noise = pixel_shuffle(h_)[:, :h, :w]  # (B, H, W, C)
        return img - jnp.moveaxis(noise, -1, 1)
