"""A dense matrix as an operator (small problems, tests, learned linear layers)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Inexact, Num

from .base import LinearOperator


class Dense(LinearOperator):
    r"""Matrix-vector product ``A x = M x`` with a dense matrix ``M`` of shape ``(m, n)``.

    Adjoint ``M^H y``. Input shape ``(n,)``, output ``(m,)``; dtype that of ``M`` (float
    matrices of integer type are cast to the default float).

    Arguments:
        matrix: real or complex array ``(m, n)``.

    Raises:
        ValueError: if ``matrix`` is not 2-D.

    Example:
        >>> A = ij.operators.Dense(jnp.eye(3))
        >>> A(jnp.ones(3))
        Array([1., 1., 1.], dtype=float32)
        >>> ij.operators.Dense(jnp.array([[1.0, 2.0]])).T(jnp.array([3.0]))     # M^T y
        Array([3., 6.], dtype=float32)
    """

    matrix: Inexact[Array, "m n"]

    def __init__(self, matrix: Num[ArrayLike, "m n"]):
        matrix = jnp.asarray(matrix)
        if matrix.ndim != 2:
            raise ValueError(f"Dense: `matrix` must be 2-D (m, n), got shape {matrix.shape}")
        if not jnp.issubdtype(matrix.dtype, jnp.inexact):
            matrix = matrix.astype(jnp.result_type(float))
        self.matrix = matrix

    @property
    def in_shape(self):
        return (self.matrix.shape[1],)

    @property
    def out_shape(self):
        return (self.matrix.shape[0],)

    @property
    def dtype(self):
        return self.matrix.dtype

    def mv(self, x):
        return self.matrix.astype(jnp.result_type(self.matrix.dtype, x.dtype)) @ x

    def gram_diagonal(self):
        return jnp.sum(jnp.abs(self.matrix) ** 2, axis=0)

    def rmv(self, y):
        return jnp.conj(self.matrix.astype(jnp.result_type(self.matrix.dtype, y.dtype))).T @ y
