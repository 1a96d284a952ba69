"""Block-average downsampling (super-resolution)."""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import numpy as np
import jax.numpy as jnp

from ._validate import as_shape
from .base import LinearOperator, ShapeLike, default_float


class Downsample(LinearOperator):
    r"""Average over non-overlapping ``f0 x f1`` blocks.

    .. math:: (A x)[i, j] = \frac{1}{f_0 f_1} \sum_{a < f_0,\, b < f_1} x[f_0 i + a, f_1 j + b]

    Adjoint: each low-resolution value spread evenly over its block,
    ``(A^T y)[f_0 i + a, f_1 j + b] = y[i, j] / (f_0 f_1)``. ``||A|| = 1 / sqrt(f_0 f_1)``.

    Arguments:
        shape: high-resolution image shape ``(N, M)`` (any number of axes).
        factor: positive int, or a tuple of ints (one per axis); each must divide ``shape``.

    Raises:
        TypeError: if ``factor`` is not an int or a tuple of ints.
        ValueError: if a factor is below 1, does not divide ``shape``, or their number
            differs from the number of axes.

    Shapes: ``x: (N, M) -> y: (N // f0, M // f1)``.

    Example:
        >>> A = ij.operators.Downsample((64, 64), 4)
        >>> A(jnp.ones((64, 64))).shape
        (16, 16)
        >>> ij.operators.Downsample((4,), 2)(jnp.array([1.0, 3.0, 5.0, 7.0]))
        Array([2., 6.], dtype=float32)
    """

    shape: tuple[int, ...] = eqx.field(static=True)
    factor: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, shape: ShapeLike, factor: int | Sequence[int]):
        who = "Downsample"
        self.shape = as_shape(shape, "shape", who)
        factors = factor if isinstance(factor, (tuple, list)) else (factor,) * len(self.shape)
        for f in factors:
            if isinstance(f, bool) or not isinstance(f, (int, np.integer)):
                raise TypeError(
                    f"{who}: `factor` must be a positive int or a tuple of ints, got {factor!r}"
                )
        factors = tuple(int(f) for f in factors)
        if len(factors) != len(self.shape):
            raise ValueError(f"{who}: `factor` needs {len(self.shape)} entries for shape {self.shape}, got {factors}")
        if any(f < 1 for f in factors):
            raise ValueError(f"{who}: `factor` must be >= 1, got {factors}")
        bad = [(n, f) for n, f in zip(self.shape, factors) if n % f]
        if bad:
            raise ValueError(f"{who}: `factor` {factors} must divide `shape` {self.shape} (not dividing: {bad})")
        self.factor = factors

    @property
    def in_shape(self):
        return self.shape

    @property
    def out_shape(self):
        return tuple(n // f for n, f in zip(self.shape, self.factor))

    def _blocked(self):
        return tuple(d for n, f in zip(self.out_shape, self.factor) for d in (n, f))

    def mv(self, x):
        axes = tuple(range(1, 2 * len(self.shape), 2))
        return x.reshape(self._blocked()).mean(axis=axes)

    def gram_diagonal(self):
        f = 1.0 / float(np.prod(self.factor))
        return jnp.full(self.shape, f * f, default_float())

    def rmv(self, y):
        scale = 1.0 / jnp.prod(jnp.asarray(self.factor)).astype(jnp.finfo(y.dtype).dtype)
        expanded = y.reshape(tuple(d for n in self.out_shape for d in (n, 1)))
        return jnp.broadcast_to(expanded, self._blocked()).reshape(self.shape) * scale
