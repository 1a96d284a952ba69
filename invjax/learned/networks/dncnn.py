r"""DnCNN: a residual convolutional denoiser, optionally noise-level aware and Lipschitz-bounded.

Zhang, Zuo, Chen, Meng & Zhang, "Beyond a Gaussian denoiser: residual learning of deep CNN for
image denoising", IEEE Trans. Image Process. 26(7), 2017. The network predicts the noise and
subtracts it:

.. math:: \hat x = D(y) = y - N(y), \qquad
          N = W_L \circ \mathrm{ReLU} \circ W_{L-1} \circ \cdots \circ \mathrm{ReLU} \circ W_1 ,

with ``W_l`` 3x3 convolutions (zero "same" padding, a bias each) and ``L = depth``.

Spectral normalisation follows Ryu, Liu, Wang, Chen, Wang & Yin, "Plug-and-play methods provably
converge with properly trained denoisers", ICML 2019: every convolution is divided by an estimate
of its operator norm, so that the residual ``N`` has a known Lipschitz bound (see :class:`DnCNN`).
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..._misc import positive_int
from ...operators.base import concrete_or_none
from ._conv import conv2d, hwio
from .._denoise import check_images, check_sigma, restore

__all__ = ["DnCNN", "conv_operator_norm"]


def conv_operator_norm(kernel: jax.Array, *, grid: int = 16, iters: int = 30) -> jax.Array:
    r"""Estimate of the operator norm of a multi-channel 2-D convolution, for any image size.

    A convolution with kernel ``K`` of shape ``(C_out, C_in, kh, kw)`` acts at each spatial
    frequency ``w`` as the ``C_out x C_in`` matrix ``K^(w) = sum_p K_p exp(-i w.p)`` (a sum over
    the taps ``p``). On a periodic grid its norm is ``max_w sigma_max(K^(w))`` over the grid's
    frequencies (Sedghi, Gupta & Long, ICLR 2019); the zero-padded ("same") convolution on an
    ``H x W`` image is a restriction of the periodic one on ``(H + kh - 1) x (W + kw - 1)``, so its
    norm is at most ``sup_w sigma_max(K^(w))`` over all frequencies, whatever the image size.

    This function takes the maximum over a ``grid x grid`` frequency grid (the real-FFT half,
    which suffices since ``K^(-w)`` is the conjugate of ``K^(w)``), with ``sigma_max`` of each
    frequency from ``iters`` power iterations on ``K^(w)^H K^(w)`` from a fixed start. Both
    steps approach the supremum from below. For random 3x3 kernels of 8-64 channels the default
    (16, 30) came within 0.7 % of it (worst of 20 draws per size; the grid accounts for most of
    it, 0.3 % at ``grid=32``; reference: an SVD at every frequency of a 160x160 grid). The
    gradient flows through the last Rayleigh quotient (the power-iteration vectors are held
    constant, as in Miyato et al., ICLR 2018). Cost: one ``(C_in*9) x (C_in*9)`` Gram product and
    ``iters`` products with ``grid * (grid/2 + 1)`` Hermitian ``C_in x C_in`` matrices.

    Arguments:
        kernel: real array ``(C_out, C_in, kh, kw)``.
        grid: frequencies per axis (static int, default 16).
        iters: power iterations per frequency (static int, default 30).

    Returns:
        A real scalar of the kernel's precision.

    Raises:
        ValueError: a kernel that is not 4-D.

    Example:
        The 5-point Laplacian acts at frequency ``w`` as ``2 cos w_1 + 2 cos w_2 - 4``, largest
        in magnitude, 8, at ``w = (pi, pi)`` (on the default grid):

        >>> laplacian = jnp.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        >>> print(f"{float(ij.learned.conv_operator_norm(laplacian[None, None])):.4f}")
        8.0000
    """
    kernel = jnp.asarray(kernel)
    if kernel.ndim != 4:
        raise ValueError(f"conv_operator_norm: `kernel` must have shape (C_out, C_in, kh, kw), got {kernel.shape}")
    c_out, c_in, kh, kw = kernel.shape
    real = kernel.dtype
    # G(w) = K^(w)^H K^(w) = sum_{p, r} K_p^T K_r exp(i w.(p - r)): the products of all tap pairs
    # (one matrix product), summed per offset q = r - p into the Gram kernel, then an explicit DFT
    # on the half grid (G(-w) is the conjugate of G(w)). Matrix products throughout: vmapped over
    # layers they stay batched products (XLA's convolutions and small FFTs were 10x slower here).
    taps = kh * kw
    kmat = kernel.reshape(c_out, c_in * taps)
    pairs = (kmat.T @ kmat).reshape(c_in, taps, c_in, taps).transpose(1, 3, 0, 2).reshape(taps * taps, c_in * c_in)
    gram_taps = jnp.asarray(_offset_sum(kh, kw), real) @ pairs  # ((2kh-1)(2kw-1), C*C)
    phase = _phases(kh, kw, grid)  # (F, offsets)
    re = (jnp.asarray(np.cos(phase), real) @ gram_taps).reshape(-1, c_in, c_in)
    im = (jnp.asarray(-np.sin(phase), real) @ gram_taps).reshape(-1, c_in, c_in)
    gram = jax.lax.complex(re, im)  # (F, C, C), Hermitian positive semi-definite

    def power(_, v):
        w = jnp.einsum("fcd,fd->fc", g0, v)
        n = jnp.linalg.norm(w, axis=1, keepdims=True)
        return w / jnp.where(n > 0, n, 1)

    g0 = jax.lax.stop_gradient(gram)
    start = _start(gram.shape[0], c_in)  # a fixed pseudo-random start (a constant: no PRNG to compile)
    start = jnp.asarray(start / np.linalg.norm(start, axis=1, keepdims=True), gram.dtype)
    v = jax.lax.stop_gradient(jax.lax.fori_loop(0, iters, power, start))
    lam = jnp.real(jnp.einsum("fc,fcd,fd->f", jnp.conj(v), gram, v))
    return jnp.sqrt(jnp.maximum(jnp.max(lam), 0.0)).astype(real)


@functools.cache
def _start(f: int, c: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((f, c))


@functools.cache
def _offset_sum(kh: int, kw: int) -> np.ndarray:
    """0/1 matrix ``(offsets, taps * taps)`` summing tap pairs ``(p, r)`` by offset ``r - p``."""
    oh, ow = 2 * kh - 1, 2 * kw - 1
    out = np.zeros((oh * ow, (kh * kw) ** 2))
    for p in range(kh * kw):
        for r in range(kh * kw):
            di, dj = r // kw - p // kw + kh - 1, r % kw - p % kw + kw - 1
            out[di * ow + dj, p * kh * kw + r] = 1
    return out


@functools.cache
def _phases(kh: int, kw: int, grid: int) -> np.ndarray:
    """``w . q`` for the half grid of frequencies ``w`` and the Gram offsets ``q``: ``(F, offsets)``."""
    w1 = 2 * np.pi * np.arange(grid) / grid
    w2 = 2 * np.pi * np.arange(grid // 2 + 1) / grid
    q1 = np.arange(2 * kh - 1) - (kh - 1)
    q2 = np.arange(2 * kw - 1) - (kw - 1)
    phase = w1[:, None, None, None] * q1[None, None, :, None] + w2[None, :, None, None] * q2[None, None, None, :]
    return phase.reshape(len(w1) * len(w2), len(q1) * len(q2))


class DnCNN(eqx.Module):
    r"""Residual CNN denoiser ``D(y) = y - N(y)`` (Zhang et al., IEEE TIP 2017), batch-norm free.

    ``N`` is ``depth`` 3x3 convolutions (zero "same" padding) with ReLU between them:
    ``channels (+1) -> width -> ... -> width -> channels``. The paper's network (depth 17,
    width 64) is the default; small ones (``depth=5, width=16``) train in seconds on a CPU.

    **No batch normalisation.** The paper puts batch normalisation in the middle layers; this
    network has a bias per convolution instead. Batch statistics would need mutable running
    averages threaded through every call (and through plug-and-play solvers), and they would
    void the Lipschitz bound below; with Adam the network trains without them.

    **Noise-level input** (``noise_level_input=True``): a constant (or per-pixel) channel equal
    to ``sigma`` is concatenated to the input, so that one network serves a range of noise
    levels (as in FFDNet, Zhang, Zuo & Zhang, IEEE TIP 2018); ``sigma`` is then required.
    Without it the network is blind and ``sigma`` is only checked.

    **Spectral normalisation** (``spectral_norm=True``): each convolution ``W_l`` is replaced
    by ``W_l / nu_l`` with ``nu_l`` the estimate of its operator norm from
    :func:`conv_operator_norm` (computed at every call from the current weights, a fixed number
    of power iterations: no hidden state, differentiable; for the default network it cost about
    as much as the convolutions on a 120x120 image, 0.3 s on a 2-core CPU, once per call and not
    per image under ``vmap``), and the output by ``lipschitz`` times
    it. ReLU is 1-Lipschitz and biases shift, so

    .. math:: \|N(y) - N(y')\| \le \mathrm{lipschitz} \cdot \prod_l \frac{\|W_l\|}{\nu_l}\,
              \|y - y'\| \approx \mathrm{lipschitz} \cdot \|y - y'\|

    for every noise level (the ``sigma`` channel enters the first layer as a constant). Each
    factor ``||W_l|| / nu_l`` is 1 up to the estimate's error (from below: at most 0.7 % per
    layer measured on random kernels with the defaults; raise ``spectral_grid`` to tighten it),
    so the bound holds up to that factor per layer. The denoiser is then ``1 + lipschitz``
    Lipschitz, and ``D - I`` is
    ``lipschitz``-Lipschitz: Ryu et al.'s condition for plug-and-play convergence (see
    :mod:`invjax.learned.priors.pnp`) when ``lipschitz < 1``. :attr:`residual_lipschitz` reports it.

    Arguments:
        channels: image channels ``C`` (default 1).
        depth: convolutions ``L >= 1`` (default 17).
        width: feature channels of the hidden layers (default 64).
        noise_level_input: add a ``sigma`` channel (default ``False``).
        spectral_norm: normalise each convolution (default ``False``).
        lipschitz: with ``spectral_norm``, the factor on ``N`` and thereby its Lipschitz bound
            (default 1.0, ``> 0``); must stay 1.0 without it.
        bias: a bias per convolution (default ``True``; ``False`` gives a bias-free,
            positively homogeneous network, Mohan et al., ICLR 2020).
        power_iters: power iterations of the spectral normalisation (default 30).
        spectral_grid: frequencies per axis of the spectral normalisation (default 16).
        dtype: parameter dtype (default float32). At call time the parameters are cast to the
            input's precision, so the output has the input's dtype.
        key: ``jax.random`` key for the He-normal initialisation (keyword, required).

    Shapes: ``y`` is ``(H, W)`` (only when ``channels == 1``) or ``(C, H, W)``; the output has
    the shape and dtype of ``y`` (real float32/float64; integers become the default float).
    ``sigma`` is a non-negative scalar or a map of shape ``(H, W)``/``(1, H, W)``. Batches:
    ``jax.vmap(net)(ys, sigmas)`` (or ``in_axes=(0, None)`` for one ``sigma``).

    Example:
        >>> net = ij.learned.DnCNN(depth=2, width=4, noise_level_input=True, key=jax.random.key(0))
        >>> x = net.denoise(jnp.full((2, 16, 16), 0.5), 0.1)      # a batch of two images
        >>> x.shape, x.dtype
        ((2, 16, 16), dtype('float32'))
    """

    weights: tuple[jax.Array, ...]
    biases: tuple[jax.Array, ...] | None
    channels: int = eqx.field(static=True)
    noise_level_input: bool = eqx.field(static=True)
    spectral_norm: bool = eqx.field(static=True)
    lipschitz: float = eqx.field(static=True)
    power_iters: int = eqx.field(static=True)
    spectral_grid: int = eqx.field(static=True)

    def __init__(
        self,
        channels: int = 1,
        depth: int = 17,
        width: int = 64,
        *,
        noise_level_input: bool = False,
        spectral_norm: bool = False,
        lipschitz: float = 1.0,
        bias: bool = True,
        power_iters: int = 30,
        spectral_grid: int = 16,
        dtype=jnp.float32,
        key,
    ):
        channels = positive_int(channels, "channels", "DnCNN")
        depth = positive_int(depth, "depth", "DnCNN")
        width = positive_int(width, "width", "DnCNN")
        for name, flag in (("noise_level_input", noise_level_input), ("spectral_norm", spectral_norm), ("bias", bias)):
            if not isinstance(flag, bool):
                raise TypeError(f"DnCNN: `{name}` must be a bool, got {flag!r}")
        try:
            lipschitz = float(lipschitz)
        except TypeError as err:
            raise TypeError(f"DnCNN: `lipschitz` must be a float, got {lipschitz!r}") from err
        if not (math.isfinite(lipschitz) and lipschitz > 0):
            raise ValueError(f"DnCNN: `lipschitz` must be finite and > 0, got {lipschitz!r}")
        if lipschitz != 1.0 and not spectral_norm:
            raise ValueError(
                f"DnCNN: `lipschitz` bounds the residual only with spectral_norm=True; got lipschitz={lipschitz} "
                "with spectral_norm=False"
            )
        dtype = jnp.dtype(dtype)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"DnCNN: `dtype` must be a real floating dtype, got {dtype.name}")
        sizes = [channels + int(noise_level_input)] + [width] * (depth - 1) + [channels]
        keys = jax.random.split(key, depth)
        weights = []
        for k, c_in, c_out in zip(keys, sizes[:-1], sizes[1:]):
            std = math.sqrt(2.0 / (9 * c_in))  # He et al., ICCV 2015 (ReLU)
            weights.append(std * jax.random.normal(k, (c_out, c_in, 3, 3), dtype))
        self.weights = tuple(weights)
        self.biases = tuple(jnp.zeros((c,), dtype) for c in sizes[1:]) if bias else None
        self.channels = channels
        self.noise_level_input = noise_level_input
        self.spectral_norm = spectral_norm
        self.lipschitz = lipschitz
        self.power_iters = positive_int(power_iters, "power_iters", "DnCNN")
        self.spectral_grid = positive_int(spectral_grid, "spectral_grid", "DnCNN", 5)

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def residual_lipschitz(self) -> float | None:
        """The Lipschitz bound of ``N = I - D`` in ``y`` (``lipschitz``) with spectral
        normalisation, ``None`` (unknown) without."""
        return self.lipschitz if self.spectral_norm else None

    # ---- input checks ---------------------------------------------------------------------------
    def _image(self, y, who):
        """One image through the checks of the denoiser contract: ``(C, H, W)`` and whether the
        caller gave ``(H, W)``."""
        img, batch = check_images(y, channels=self.channels, who=who)
        one = self.channels == 1 and jnp.ndim(y) == 3 and jnp.shape(y)[0] == 1  # (1, H, W): one image
        if batch is not None and not one:
            expected = "(H, W) or (1, H, W)" if self.channels == 1 else f"({self.channels}, H, W)"
            raise ValueError(f"{who}: `y` must be one image of shape {expected} (channels={self.channels}), got "
                             f"shape {tuple(jnp.shape(y))}; for a batch use DnCNN.denoise(y, sigma)")
        return img[0], jnp.ndim(y) == 2

    def _sigma(self, sigma, y, who):
        """``sigma`` as a ``(1, H, W)`` map in ``y``'s dtype (``None`` stays ``None``): a scalar
        checked as every denoiser's (finite, ``> 0``, ``<= 1``), or a per-pixel map (``>= 0``,
        ``<= 1``)."""
        if sigma is None:
            if self.noise_level_input:
                raise TypeError(f"{who}: `sigma` is required (the network has a noise-level input), got None")
            return None
        hw = y.shape[1:]
        if jnp.ndim(sigma) == 0:
            return jnp.broadcast_to(check_sigma(sigma, who, None).astype(y.dtype), (1,) + hw)
        s = jnp.asarray(sigma)
        if jnp.issubdtype(s.dtype, jnp.complexfloating):
            raise TypeError(f"{who}: `sigma` must be real, got dtype {s.dtype.name}")
        if s.shape not in (hw, (1,) + hw):
            raise ValueError(f"{who}: `sigma` must be a scalar or have shape {hw} or {(1,) + hw}, got shape {s.shape}")
        value = concrete_or_none(s)
        if value is not None and (not np.all(np.isfinite(value)) or np.any(value < 0) or np.any(value > 1)):
            raise ValueError(f"{who}: a `sigma` map must be finite, >= 0 and <= 1 (noise standard deviations on the "
                             f"[0, 1] image scale), got values in [{np.nanmin(value)}, {np.nanmax(value)}]")
        return jnp.broadcast_to(s.astype(y.dtype), (1,) + hw)

    def _noise_map(self, sigma, img, who):
        s = self._sigma(sigma, img, who)  # checked also when the network is blind
        return s if self.noise_level_input else None

    # ---- the network ----------------------------------------------------------------------------
    def normalised_weights(self, dtype=None) -> tuple[jax.Array, ...]:
        """The convolution kernels as applied: divided by their norm estimates with
        ``spectral_norm`` (the ``lipschitz`` factor excluded), else as stored."""
        ws = tuple(w if dtype is None else w.astype(dtype) for w in self.weights)
        if not self.spectral_norm:
            return ws
        norm = functools.partial(conv_operator_norm, grid=self.spectral_grid, iters=self.power_iters)
        if len(ws) <= 3:
            return tuple(w / norm(w) for w in ws)
        # the hidden layers share a shape: one loop over them compiles once, not depth - 2 times
        # (a vmap batched the per-frequency products less efficiently than this loop on CPU)
        hidden = jnp.stack(ws[1:-1])
        hidden = hidden / jax.lax.map(norm, hidden)[:, None, None, None, None]
        return (ws[0] / norm(ws[0]),) + tuple(hidden) + (ws[-1] / norm(ws[-1]),)

    def residual(self, y, sigma=None) -> jax.Array:
        """``N(y)``, the predicted noise (shape and dtype of ``y``)."""
        img, squeeze = self._image(y, "DnCNN.residual")
        out = _residual(self, img, self._noise_map(sigma, img, "DnCNN.residual"))
        return out[0] if squeeze else out

    def __call__(self, y, sigma=None) -> jax.Array:
        """The denoised image ``y - N(y)`` (see the class docstring for shapes)."""
        img, squeeze = self._image(y, "DnCNN")
        out = img - _residual(self, img, self._noise_map(sigma, img, "DnCNN"))
        return out[0] if squeeze else out

    def denoise(self, y, sigma=None) -> jax.Array:
        """``y - N(y)`` at noise level ``sigma`` for one image or a batch (the library's denoiser
        contract; calling the network takes one image, with a scalar or map ``sigma``).

        Shapes: grayscale networks take ``(H, W)`` or a batch ``(B, H, W)``; ``C``-channel ones
        ``(C, H, W)`` or ``(B, C, H, W)``. ``sigma``: the noise standard deviation on the scale of
        ``y``, a scalar ``> 0`` or one per image ``(B,)``; required with a noise-level input,
        ignored (but still checked when given) by a blind network. Returns the shape and dtype of
        ``y``.

        Raises:
            ValueError: ``y`` of another rank or channel count; a concrete ``sigma <= 0``,
                non-finite or of the wrong shape.
            TypeError: ``sigma`` missing for a network with a noise-level input.
        """
        who = "DnCNN.denoise"
        img, batch = check_images(y, channels=self.channels, who=who)
        if sigma is None:
            if self.noise_level_input:
                raise TypeError(f"{who}: `sigma` (the noise standard deviation) is required, got None")
            s = None
        else:
            s = check_sigma(sigma, who, None if batch is None else img.shape[0])
            s = jnp.broadcast_to(jnp.asarray(s, img.dtype), (img.shape[0],))
        return restore(_apply(self, img, s), jnp.shape(y))

    def apply(self, img: jax.Array, sigma: jax.Array | None) -> jax.Array:
        """The unchecked network on ``img`` ``(B, C, H, W)`` with ``sigma`` ``(B,)`` (or ``None``
        for a blind network): the fast path used inside solvers and training."""
        return _apply(self, img, sigma)


def _apply(net: DnCNN, img, sigma):
    if net.noise_level_input:
        smap = jnp.broadcast_to(jnp.asarray(sigma, img.dtype)[:, None, None, None], (img.shape[0], 1) + img.shape[2:])
    else:
        smap = None
    return img - _residual_batch(net, img, smap)


@eqx.filter_jit  # one compiled program per call outside jit (op by op, the spectral norm is slow)
def _residual(net: DnCNN, img: jax.Array, sigma_map: jax.Array | None) -> jax.Array:
    """``N`` on a checked ``(C, H, W)`` image and ``(1, H, W)`` noise map (or ``None``)."""
    return _residual_batch(net, img[None], None if sigma_map is None else sigma_map[None])[0]


def _residual_batch(net: DnCNN, imgs: jax.Array, sigma_maps: jax.Array | None) -> jax.Array:
    """``N`` on ``(B, C, H, W)`` images and ``(B, 1, H, W)`` noise maps (or ``None``), computed
    channels-last with :func:`~invjax.learned.networks._conv.conv2d` (fast inside solver loops)."""
    x = jnp.concatenate([imgs, sigma_maps], axis=1) if net.noise_level_input else imgs
    x = jnp.moveaxis(x, 1, -1)
    ws = net.normalised_weights(imgs.dtype)
    bs = (None,) * len(ws) if net.biases is None else net.biases
    for i, (w, b) in enumerate(zip(ws, bs)):
        x = conv2d(x, hwio(w), b)
        if i < len(ws) - 1:
            x = jax.nn.relu(x)
    if net.spectral_norm and net.lipschitz != 1.0:
        x = net.lipschitz * x
    return jnp.moveaxis(x, -1, 1)
