"""Pixel mask (inpainting)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Real

from ._validate import as_shape, check_finite
from .base import LinearOperator, ShapeLike, default_float


class Mask(LinearOperator):
    r"""Elementwise mask ``(A x)[i] = m[i] x[i]`` (inpainting: ``m`` is 1 where a pixel is seen).

    Self-adjoint for a real mask: ``A^T = A``. Unobserved pixels are kept as zeros in the output
    rather than removed, so shapes stay static under ``jit``/``vmap``.

    Arguments:
        mask: array of 0/1 (bool or real) or nonnegative weights, shape ``S``.
        shape: optional expected image shape; a mismatch with ``mask.shape`` raises.
        dtype: input dtype (default float32; pass ``jnp.complex64`` to mask complex images).

    Raises:
        ValueError: if ``mask`` is a scalar, has non-finite entries or differs from ``shape``.
        TypeError: if ``mask`` is complex.

    Shapes: ``x: S -> y: S``.

    Example:
        >>> A = ij.operators.Mask(jnp.array([True, False, True]))
        >>> A(jnp.array([4.0, 5.0, 6.0]))
        Array([4., 0., 6.], dtype=float32)
        >>> int(A.n_measurements)                 # the observed entries
        2
    """

    mask: Float[Array, "*shape"]
    _dtype: str = eqx.field(static=True)

    def __init__(
        self, mask: Real[ArrayLike, "*shape"] | Bool[ArrayLike, "*shape"], shape: ShapeLike | None = None, dtype=None
    ):
        who = "Mask"
        mask = jnp.asarray(mask)
        if mask.ndim == 0:
            raise ValueError(f"{who}: `mask` must be an array with at least 1 dimension, got a scalar")
        if shape is not None and tuple(mask.shape) != as_shape(shape, "shape", who):
            raise ValueError(f"{who}: `mask` shape {tuple(mask.shape)} must equal `shape` {tuple(shape)}")
        if jnp.issubdtype(mask.dtype, jnp.complexfloating):
            raise TypeError(f"{who}: `mask` must be real or bool, got {mask.dtype}")
        if not jnp.issubdtype(mask.dtype, jnp.floating):
            mask = mask.astype(default_float())
        check_finite(mask, "mask", who)
        self.mask = mask
        self._dtype = jnp.dtype(mask.dtype if dtype is None else dtype).name

    @property
    def in_shape(self):
        return tuple(self.mask.shape)

    @property
    def out_shape(self):
        return tuple(self.mask.shape)

    @property
    def dtype(self):
        return jnp.dtype(self._dtype)

    @property
    def n_measurements(self):
        """The number of observed entries (nonzero mask entries), a scalar array."""
        return jnp.sum(self.mask != 0)

    def mv(self, x):
        return x * self.mask.astype(jnp.finfo(x.dtype).dtype)

    def rmv(self, y):
        return self.mv(y)

    def gram(self, x):
        return x * (self.mask**2).astype(jnp.finfo(x.dtype).dtype)

    def gram_diagonal(self):
        return self.mask**2
