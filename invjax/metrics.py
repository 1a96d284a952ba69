"""Image quality metrics: MSE, NMSE, PSNR and SSIM.

All metrics compare an estimate ``x`` with a reference ``ref`` of the same shape and return a
scalar. They are pure JAX: ``jax.jit``, ``jax.vmap`` (for a batch, map over a leading axis)
and ``jax.grad`` with respect to ``x`` all work, so a metric can serve as a training loss.

- :func:`mse`, :func:`nmse` accept any shape, real or complex (the whole array is one signal).
- :func:`psnr` accepts any real shape (the whole array is one signal).
- :func:`ssim` accepts one real 2-D image of shape ``(H, W)``.

:func:`psnr` and :func:`ssim` reproduce ``skimage.metrics.peak_signal_noise_ratio`` and
``skimage.metrics.structural_similarity`` (with its default settings) given the same
``data_range``. Where ``data_range`` is omitted both take ``ref.max() - ref.min()``; note that
scikit-image instead guesses the range from the dtype for PSNR (1 or 2 for floats) and
refuses to guess for SSIM on floats, so pass ``data_range`` explicitly when comparing.

Integer inputs are promoted to the default float dtype (float32, or float64 under
``jax_enable_x64``); mixed float dtypes promote as in ``jnp.result_type``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Num, Real

__all__ = ["mse", "nmse", "psnr", "ssim"]


def _pair(x, ref, who: str, *, real: bool = False) -> tuple[jax.Array, jax.Array]:
    x, ref = jnp.asarray(x), jnp.asarray(ref)
    if x.shape != ref.shape:
        raise ValueError(
            f"{who}: `x` and `ref` must have the same shape, got x.shape={x.shape} "
            f"and ref.shape={ref.shape}"
        )
    dtype = jnp.result_type(x.dtype, ref.dtype)
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(float)
    if real and jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(
            f"{who}: `x` and `ref` must be real, got {x.dtype.name} and {ref.dtype.name} "
            "(compare magnitudes, e.g. jnp.abs(x))"
        )
    return x.astype(dtype), ref.astype(dtype)


def _data_range(data_range, ref: jax.Array, who: str) -> jax.Array | None:
    """A validated ``data_range`` as an array of ``ref``'s dtype; ``None`` stays ``None``."""
    if data_range is None:
        return None
    if not isinstance(data_range, jax.core.Tracer):
        value = np.asarray(data_range)
        if value.shape != () or not value > 0:
            raise ValueError(f"{who}: `data_range` must be a positive scalar, got {data_range}")
    return jnp.asarray(data_range, dtype=ref.dtype)


def mse(x: Num[ArrayLike, "*shape"], ref: Num[ArrayLike, "*shape"]) -> Float[Array, ""]:
    r"""Mean squared error :math:`\frac1N \sum_i |x_i - r_i|^2`.

    Arguments:
        x: the estimate, any shape, real or complex (integers promote to the default float).
        ref: the reference, same shape as ``x``.

    Returns:
        A real scalar of the inputs' precision.

    Raises:
        ValueError: if ``x`` and ``ref`` differ in shape.

    Example:
        >>> ij.metrics.mse(jnp.array([1.0, 2.0]), jnp.array([1.0, 0.0]))
        Array(2., dtype=float32)
    """
    x, ref = _pair(x, ref, "metrics.mse")
    return _mse(x, ref)


# The public functions validate eagerly, then call one jitted kernel: that makes eager calls
# one compiled program (cached per shape and dtype) instead of a dispatch per primitive.
@jax.jit
def _mse(x, ref):
    return jnp.mean(jnp.abs(x - ref) ** 2)


def nmse(x: Num[ArrayLike, "*shape"], ref: Num[ArrayLike, "*shape"]) -> Float[Array, ""]:
    r"""Normalised mean squared error :math:`\|x - r\|_2^2 / \|r\|_2^2`.

    Invariant to a common scaling of ``x`` and ``ref``. Infinite (or NaN) for ``ref = 0``.

    Arguments:
        x: the estimate, any shape, real or complex (integers promote to the default float).
        ref: the reference, same shape as ``x``.

    Returns:
        A real scalar of the inputs' precision.

    Raises:
        ValueError: if ``x`` and ``ref`` differ in shape.

    Example:
        >>> ij.metrics.nmse(jnp.array([3.0, 0.0]), jnp.array([4.0, 0.0]))
        Array(0.0625, dtype=float32)
    """
    x, ref = _pair(x, ref, "metrics.nmse")
    return _nmse(x, ref)


@jax.jit
def _nmse(x, ref):
    return jnp.sum(jnp.abs(x - ref) ** 2) / jnp.sum(jnp.abs(ref) ** 2)


def psnr(
    x: Real[ArrayLike, "*shape"], ref: Real[ArrayLike, "*shape"], data_range: Real[ArrayLike, ""] | None = None
) -> Float[Array, ""]:
    r"""Peak signal-to-noise ratio in decibels, :math:`10 \log_{10}(R^2 / \mathrm{MSE}(x, r))`.

    Equals ``skimage.metrics.peak_signal_noise_ratio(ref, x, data_range=R)``. Infinite when
    ``x == ref``.

    Arguments:
        x: the estimate, any shape, real (integers promote to the default float).
        ref: the reference, same shape as ``x``.
        data_range: the peak-to-peak range :math:`R` of the signal, ``> 0``. Default
            ``ref.max() - ref.min()`` (scikit-image instead guesses from the dtype).

    Returns:
        A real scalar (dB) of the inputs' precision.

    Raises:
        ValueError: if ``x`` and ``ref`` differ in shape, or ``data_range`` is not a positive
            scalar.
        TypeError: for complex inputs (compare magnitudes, ``jnp.abs(x)``).

    Example:
        >>> ref = jnp.linspace(0.0, 1.0, 100)
        >>> print(f"{ij.metrics.psnr(ref + 0.01, ref, data_range=1.0):.2f}")   # MSE 1e-4
        40.00
    """
    who = "metrics.psnr"
    x, ref = _pair(x, ref, who, real=True)
    return _psnr(x, ref, _data_range(data_range, ref, who))


@jax.jit
def _psnr(x, ref, peak):
    if peak is None:
        peak = jnp.max(ref) - jnp.min(ref)
    return 10.0 * jnp.log10(peak**2 / jnp.mean((x - ref) ** 2))


def _gaussian_taps(sigma: float, truncate: float) -> np.ndarray:
    # The kernel of scipy.ndimage.gaussian_filter: radius int(truncate * sigma + 0.5).
    radius = int(truncate * sigma + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (t / sigma) ** 2)
    return taps / taps.sum()


def _filter_valid(images: jax.Array, taps: tuple[float, ...]) -> jax.Array:
    """Separable correlation of ``(..., H, W)`` with ``taps`` on both image axes, 'valid' part.

    Returns ``(..., H - 2r, W - 2r)`` for ``len(taps) = 2r + 1``. A uniform window is two
    windowed sums (``lax.reduce_window``, whose gradient compiles and runs faster on CPU than
    that of slice sums); other weights a sum of shifted slices per axis.
    """
    height, width = images.shape[-2:]
    size = len(taps)
    lead = (1,) * (images.ndim - 2)
    if all(t == taps[0] for t in taps):
        zero = np.zeros((), images.dtype)  # concrete 0: lowers to a differentiable window sum
        strides = (1,) * images.ndim

        def window_sum(x, window):
            return jax.lax.reduce_window(x, zero, jax.lax.add, lead + window, strides, "VALID")

        return window_sum(window_sum(images, (size, 1)), (1, size)) * (taps[0] * taps[0])
    rows = sum(t * images[..., k : k + height - size + 1, :] for k, t in enumerate(taps))
    return sum(t * rows[..., :, k : k + width - size + 1] for k, t in enumerate(taps))


def ssim(
    x: Real[ArrayLike, "H W"],
    ref: Real[ArrayLike, "H W"],
    data_range: Real[ArrayLike, ""] | None = None,
    *,
    win_size: int | None = None,
    K1: float = 0.01,
    K2: float = 0.03,
    use_sample_covariance: bool = True,
    gaussian_weights: bool = False,
    sigma: float = 1.5,
) -> Float[Array, ""]:
    r"""Mean structural similarity index (Wang et al. 2004) of a 2-D image.

    With local means :math:`\mu`, variances :math:`v` and covariance :math:`v_{xr}` taken
    over a sliding window,

    .. math::
        S = \frac{(2\mu_x\mu_r + C_1)(2 v_{xr} + C_2)}
                 {(\mu_x^2 + \mu_r^2 + C_1)(v_x + v_r + C_2)},
        \qquad C_1 = (K_1 R)^2,\; C_2 = (K_2 R)^2,

    averaged over the pixels at least ``(win_size - 1) // 2`` away from the border. By
    default the window is a 7×7 uniform filter and the (co)variances carry the sample
    correction :math:`N/(N-1)`, :math:`N = 49`. The result equals
    ``skimage.metrics.structural_similarity(x, ref, data_range=R, ...)`` with the same
    keyword settings (to float rounding). For Wang et al.'s original settings pass
    ``gaussian_weights=True, use_sample_covariance=False``.

    Arguments:
        x: the estimate, shape ``(H, W)``, real. Use ``jax.vmap`` for a batch.
        ref: the reference, same shape as ``x``.
        data_range: the peak-to-peak range :math:`R`, ``> 0``. Default
            ``ref.max() - ref.min()`` (scikit-image requires it for float images).
        win_size: odd side of the window, at most ``min(H, W)``. Default 7, or the Gaussian
            filter's width ``2 * int(3.5 * sigma + 0.5) + 1`` (11 for ``sigma = 1.5``) when
            ``gaussian_weights``.
        K1: the constant :math:`K_1 \ge 0`. Default 0.01.
        K2: the constant :math:`K_2 \ge 0`. Default 0.03.
        use_sample_covariance: normalise (co)variances by :math:`N - 1` rather than
            :math:`N`, :math:`N` = ``win_size**2``. Default True.
        gaussian_weights: weight the window by a Gaussian of standard deviation ``sigma``
            truncated at 3.5 ``sigma`` (reflect-padded at the border), instead of a uniform
            ``win_size`` window. Default False.
        sigma: the Gaussian's standard deviation, used when ``gaussian_weights``. Default 1.5.

    Returns:
        A real scalar, at most 1, of the inputs' precision.

    Raises:
        ValueError: if ``x`` and ``ref`` differ in shape or are not 2-D, ``data_range`` is
            not positive, ``win_size`` is not odd, is 1 with ``use_sample_covariance``, or
            exceeds the image, or ``K1``, ``K2``, ``sigma`` are out of range.
        TypeError: for complex inputs.

    Example:
        >>> ref = jnp.outer(jnp.linspace(0, 1, 16), jnp.linspace(0, 1, 16))
        >>> print(f"{ij.metrics.ssim(ref, ref, data_range=1.0):.3f}")
        1.000
        >>> bool(ij.metrics.ssim(0.5 * ref, ref, data_range=1.0) < 1)
        True
    """
    who = "metrics.ssim"
    x, ref = _pair(x, ref, who, real=True)
    if x.ndim != 2:
        raise ValueError(
            f"{who}: expects one image of shape (H, W), got shape {x.shape} "
            "(use jax.vmap over a leading batch axis)"
        )
    if K1 < 0 or K2 < 0 or sigma <= 0:
        raise ValueError(f"{who}: need K1 >= 0, K2 >= 0, sigma > 0; got {K1}, {K2}, {sigma}")
    if gaussian_weights:
        taps = _gaussian_taps(sigma, truncate=3.5)
        if win_size is None:
            win_size = len(taps)
    else:
        win_size = 7 if win_size is None else win_size
    if win_size < 1 or win_size % 2 != 1:
        raise ValueError(f"{who}: `win_size` must be a positive odd integer, got {win_size}")
    if use_sample_covariance and win_size == 1:
        raise ValueError(f"{who}: `win_size` 1 leaves no sample covariance (N - 1 = 0)")
    if win_size > min(x.shape):
        raise ValueError(
            f"{who}: `win_size` {win_size} exceeds the image shape {x.shape}; "
            "pass a smaller odd win_size"
        )
    if not gaussian_weights:
        taps = np.full(win_size, 1.0 / win_size)
    npix = win_size**2
    cov_norm = npix / (npix - 1) if use_sample_covariance else 1.0
    peak = _data_range(data_range, ref, who)
    taps = tuple(float(t) for t in taps)
    return _ssim(x, ref, peak, taps, win_size, float(K1), float(K2), cov_norm)


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7))
def _ssim(x, ref, peak, taps, win_size, K1, K2, cov_norm):
    if peak is None:
        peak = jnp.max(ref) - jnp.min(ref)
    # S is averaged over the pixels `crop` or more from the border. Filtering only there
    # needs no boundary rule unless the filter is wider than the crop (a Gaussian with a
    # small win_size), where symmetric padding reproduces scipy.ndimage's mode='reflect'.
    crop = (win_size - 1) // 2
    radius = len(taps) // 2
    images = jnp.stack([x, ref, x * x, ref * ref, x * ref])
    pad = max(radius - crop, 0)
    if pad:
        images = jnp.pad(images, [(0, 0), (pad, pad), (pad, pad)], mode="symmetric")
    moments = _filter_valid(images, taps)
    skip = max(crop - radius, 0)
    height, width = moments.shape[-2:]
    mx, mr, mxx, mrr, mxr = moments[:, skip : height - skip, skip : width - skip]
    vx = cov_norm * (mxx - mx * mx)
    vr = cov_norm * (mrr - mr * mr)
    vxr = cov_norm * (mxr - mx * mr)
    c1 = (K1 * peak) ** 2
    c2 = (K2 * peak) ** 2
    s = ((2 * mx * mr + c1) * (2 * vxr + c2)) / ((mx**2 + mr**2 + c1) * (vx + vr + c2))
    return jnp.mean(s)

