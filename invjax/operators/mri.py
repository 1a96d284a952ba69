"""Cartesian MRI: undersampled orthonormal 2D FFT, single- or multi-coil."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Complex, Float, Num, Real

from ._validate import check_finite
from .base import LinearOperator, default_complex


class CartesianMRI(LinearOperator):
    r"""Undersampled Cartesian k-space sampling.

    Single coil: ``y = M \odot F x``. Multi-coil with sensitivity maps ``S_c``:
    ``y_c = M \odot F (S_c \odot x)``, ``c = 1..C``. ``F`` is the orthonormal 2D DFT
    (``norm="ortho"``), so with a full mask and one coil ``A`` is unitary. With
    ``centered=True`` k-space has DC at the array centre (``fftshift`` convention used by
    most MRI data sets); otherwise DC is at index ``(0, 0)``.

    Adjoint: ``A^H y = \sum_c \bar S_c \odot F^{-1}(M \odot y_c)`` (for a real mask).

    Arguments:
        mask: real or bool array ``(H, W)``: 1 where k-space is sampled (weights allowed).
        sensitivities: optional complex array ``(C, H, W)`` of coil sensitivity maps.
        centered: whether k-space is stored with DC at the centre (default False).
        dtype: the complex dtype of images and k-space (default: that of ``sensitivities``, else
            complex64, or complex128 under ``jax_enable_x64``); e.g. ``jnp.complex64`` keeps a
            single-precision problem single precision under ``jax_enable_x64``.

    Shapes: ``x: (H, W)`` complex -> ``y: (H, W)`` (one coil) or ``(C, H, W)`` complex.

    Raises:
        ValueError: if ``mask`` is not 2-D or not finite, or ``sensitivities`` is not
            ``(C, H, W)`` or not finite.
        TypeError: if ``mask`` is complex or ``dtype`` is not complex.

    Example:
        >>> mask = jnp.zeros((64, 64)).at[:, ::4].set(1.0)
        >>> A = ij.operators.CartesianMRI(mask)
        >>> y = A(jnp.ones((64, 64), jnp.complex64))
        >>> y.shape, y.dtype, complex(y[0, 0])          # the DC coefficient, sqrt(64 * 64)
        ((64, 64), dtype('complex64'), (64+0j))
    """

    mask: Float[Array, "H W"]
    sensitivities: Complex[Array, "C H W"] | None
    centered: bool = eqx.field(static=True)
    _dtype: str = eqx.field(static=True)

    def __init__(
        self,
        mask: Real[ArrayLike, "H W"] | Bool[ArrayLike, "H W"],
        sensitivities: Num[ArrayLike, "C H W"] | None = None,
        centered: bool = False,
        dtype=None,
    ):
        who = "CartesianMRI"
        mask = jnp.asarray(mask)
        if mask.ndim != 2:
            raise ValueError(f"{who}: `mask` must be 2-D (H, W), got shape {mask.shape}")
        if jnp.issubdtype(mask.dtype, jnp.complexfloating):
            raise TypeError(f"{who}: `mask` must be real or bool, got {mask.dtype}")
        check_finite(mask, "mask", who)
        if dtype is None:
            dtype = default_complex() if sensitivities is None else jnp.result_type(jnp.asarray(sensitivities).dtype, jnp.complex64)
        dtype = jnp.dtype(dtype)
        if not jnp.issubdtype(dtype, jnp.complexfloating):
            raise TypeError(f"{who}: `dtype` must be complex, got {dtype}")
        self._dtype = dtype.name
        self.mask = mask.astype(jnp.finfo(dtype).dtype)
        if sensitivities is not None:
            sensitivities = jnp.asarray(sensitivities)
            if sensitivities.ndim != 3 or tuple(sensitivities.shape[1:]) != tuple(mask.shape):
                raise ValueError(
                    f"{who}: `sensitivities` must have shape (C, {mask.shape[0]}, {mask.shape[1]}) "
                    f"to match `mask`, got {tuple(sensitivities.shape)}"
                )
            check_finite(sensitivities, "sensitivities", who)
            sensitivities = sensitivities.astype(dtype)
        self.sensitivities = sensitivities
        self.centered = bool(centered)

    @property
    def in_shape(self):
        return tuple(self.mask.shape)

    @property
    def out_shape(self):
        if self.sensitivities is None:
            return tuple(self.mask.shape)
        return (self.sensitivities.shape[0],) + tuple(self.mask.shape)

    @property
    def dtype(self):
        return jnp.dtype(self._dtype)

    @property
    def n_measurements(self):
        """The sampled k-space entries (nonzero mask entries) times the coils, a scalar array."""
        coils = 1 if self.sensitivities is None else self.sensitivities.shape[0]
        return coils * jnp.sum(self.mask != 0)

    def _fft(self, x):
        if self.centered:
            x = jnp.fft.ifftshift(x, axes=(-2, -1))
        k = jnp.fft.fft2(x, norm="ortho")
        return jnp.fft.fftshift(k, axes=(-2, -1)) if self.centered else k

    def _ifft(self, k):
        if self.centered:
            k = jnp.fft.ifftshift(k, axes=(-2, -1))
        x = jnp.fft.ifft2(k, norm="ortho")
        return jnp.fft.fftshift(x, axes=(-2, -1)) if self.centered else x

    def mv(self, x):
        x = x.astype(jnp.result_type(x.dtype, jnp.complex64))
        mask = self.mask.astype(jnp.finfo(x.dtype).dtype)
        if self.sensitivities is not None:
            x = self.sensitivities.astype(x.dtype) * x
        return mask * self._fft(x)

    def gram_diagonal(self):
        # F^H diag(m^2) F is circulant with diagonal mean(m^2) (orthonormal F)
        level = jnp.mean(self.mask**2)
        if self.sensitivities is None:
            return jnp.full(self.in_shape, level, self.mask.dtype)
        return level * jnp.sum(jnp.abs(self.sensitivities) ** 2, axis=0).astype(self.mask.dtype)

    def rmv(self, y):
        y = y.astype(jnp.result_type(y.dtype, jnp.complex64))
        mask = self.mask.astype(jnp.finfo(y.dtype).dtype)
        x = self._ifft(mask * y)
        if self.sensitivities is not None:
            x = jnp.sum(jnp.conj(self.sensitivities.astype(y.dtype)) * x, axis=0)
        return x
