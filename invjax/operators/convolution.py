"""Circular 2D convolution by FFT."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Complex, Float, Real

from ._validate import as_shape, check_finite
from .base import LinearOperator, ShapeLike, default_float


class Convolution(LinearOperator):
    r"""Circular (periodic) 2D convolution with a centred point-spread function.

    .. math::  (A x)[i, j] = \sum_{k, l} h[k, l]\, x[(i - k + c_0) \bmod N, (j - l + c_1) \bmod M]

    with :math:`c = (\text{psf.shape} - 1) / 2` the PSF centre, i.e. ``A x`` equals
    ``scipy.ndimage.convolve(x, psf, mode="wrap")``. Computed as
    ``irfft2(rfft2(x) * H)`` with the transfer function ``H`` (the FFT of the PSF embedded and
    rolled so its centre sits at the origin), so one application costs two real FFTs. The
    adjoint is the correlation ``irfft2(rfft2(y) * conj(H))``.

    Arguments:
        psf: real array ``(k0, k1)``, both sizes odd and at most the image size; centred.
        shape: image shape ``(N, M)``.

    Raises:
        ValueError: if ``psf`` is not 2-D, has an even size, is larger than ``shape`` or has
            non-finite entries, or ``shape`` is not two positive ints.
        TypeError: if ``psf`` is complex.

    Shapes: ``x: (N, M) -> y: (N, M)``; dtype float32 (float64 under ``jax_enable_x64``
    with a float64 PSF).

    The PSF is the operator's only parameter (its one source of truth): the transfer function
    is computed from it where needed, so ``jax.grad`` with respect to ``psf`` and
    ``eqx.tree_at(lambda A: A.psf, A, new_psf)`` reach every application. Inside a compiled
    solver loop the transfer function depends on no loop variable, and XLA computes it once.

    Example:
        >>> A = ij.operators.Convolution(jnp.ones((3, 3)) / 9, shape=(4, 4))
        >>> x = jnp.zeros((4, 4)).at[0, 0].set(9.0)
        >>> A(x)                                  # the PSF, wrapped around the corner
        Array([[1., 1., 0., 1.],
               [1., 1., 0., 1.],
               [0., 0., 0., 0.],
               [1., 1., 0., 1.]], dtype=float32)
    """

    psf: Float[Array, "k0 k1"]
    shape: tuple[int, int] = eqx.field(static=True)

    def __init__(self, psf: Real[ArrayLike, "k0 k1"], shape: ShapeLike):
        who = "Convolution"
        self.shape = as_shape(shape, "shape", who, ndim=2)
        psf = jnp.asarray(psf)
        if psf.ndim != 2:
            raise ValueError(f"{who}: `psf` must be 2-D, got shape {psf.shape}")
        if jnp.issubdtype(psf.dtype, jnp.complexfloating):
            raise TypeError(f"{who}: `psf` must be real, got {psf.dtype}")
        if not jnp.issubdtype(psf.dtype, jnp.floating):
            psf = psf.astype(default_float())
        if any(k % 2 == 0 for k in psf.shape):
            raise ValueError(f"{who}: `psf` sizes must be odd (a centred PSF), got {psf.shape}")
        if any(k > n for k, n in zip(psf.shape, self.shape)):
            raise ValueError(
                f"{who}: `psf` of shape {psf.shape} is larger than the image `shape` {self.shape}"
            )
        check_finite(psf, "psf", who)
        self.psf = psf

    @property
    def in_shape(self):
        return self.shape

    @property
    def out_shape(self):
        return self.shape

    @property
    def dtype(self):
        return self.psf.dtype

    @property
    def otf(self) -> Complex[Array, "N M2"]:
        """The transfer function ``H`` (``rfft2`` of the centred PSF), shape ``(N, M // 2 + 1)``."""
        return transfer_function(self.psf, self.shape)

    def _apply(self, x, symbol):
        dtype = jnp.result_type(x.dtype, self.psf.dtype)
        out = jnp.fft.irfft2(jnp.fft.rfft2(x.astype(dtype)) * symbol, s=self.shape)
        return out.astype(dtype)

    def fourier_symbol(self):
        return self.otf[None]

    def mv(self, x):
        return self._apply(x, self.otf)

    def rmv(self, y):
        return self._apply(y, jnp.conj(self.otf))

    def gram(self, x):
        # A^H A in one FFT pair instead of two
        return self._apply(x, jnp.abs(self.otf) ** 2)

    def gram_diagonal(self):
        return jnp.full(self.shape, jnp.sum(self.psf**2), self.psf.dtype)


def transfer_function(psf: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """``rfft2`` of a centred PSF zero-padded to ``shape`` with its centre moved to ``(0, 0)``.

    Returns a complex array of shape ``(N, M // 2 + 1)``.
    """
    k0, k1 = psf.shape
    padded = jnp.zeros(shape, psf.dtype).at[:k0, :k1].set(psf)
    padded = jnp.roll(padded, (-(k0 // 2), -(k1 // 2)), axis=(0, 1))
    return jnp.fft.rfft2(padded)


def gaussian_psf(size: int = 9, sigma: float | int = 2.0, dtype=None) -> Float[Array, "size size"]:
    r"""Normalised, centred ``size x size`` Gaussian PSF.

    .. math:: h[i, j] = \frac{e^{-(i^2 + j^2) / (2\sigma^2)}}{\sum_{k,l} e^{-(k^2 + l^2) / (2\sigma^2)}},
              \qquad |i|, |j| \le \text{size} // 2 .

    Arguments:
        size: odd side length (default 9).
        sigma: standard deviation in pixels (default 2), ``> 0``.
        dtype: default float32 (float64 under ``jax_enable_x64``).

    Returns:
        Array ``(size, size)`` of ``dtype`` summing to 1, for :class:`Convolution`.

    Raises:
        ValueError: if ``size`` is not a positive odd int or ``sigma`` is not positive.

    Example:
        >>> h = ij.operators.gaussian_psf(5, sigma=1.0)
        >>> h.shape, f"{h.sum():.3f}", bool(h[2, 2] == h.max())
        ((5, 5), '1.000', True)
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"gaussian_psf: `size` must be a positive odd int, got {size}")
    if not sigma > 0:
        raise ValueError(f"gaussian_psf: `sigma` must be > 0, got {sigma}")
    dtype = default_float() if dtype is None else dtype
    r = jnp.arange(size, dtype=dtype) - size // 2
    g = jnp.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return g / g.sum()
