"""Forward finite differences (the image gradient) and its adjoint, the negative divergence."""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp

from ._validate import as_shape
from .base import LinearOperator, ShapeLike, default_float

_BOUNDARIES = ("periodic", "neumann")


class FiniteDifference(LinearOperator):
    r"""Forward differences along each axis, stacked: ``D x = (D_0 x, ..., D_{d-1} x)``.

    .. math:: (D_k x)[i] = x[i + e_k] - x[i]

    Boundary:
      * ``"periodic"``: ``x[n] = x[0]`` (circulant, diagonalised by the FFT; ``||D||^2 = 4 d``
        for even sizes).
      * ``"neumann"``: the difference leaving the image is 0, ``(D_k x)[n-1] = 0``
        (``||D||^2 < 4 d``).

    The adjoint is the negative divergence, ``D^T p = -div p``, with the matching boundary:
    ``(D_k^T p)[i] = p[i - e_k] - p[i]`` (periodic), and for Neumann the same with
    ``p[-1] := 0`` and ``p[n-1] := 0``.

    Arguments:
        shape: image shape ``S`` (any number of axes).
        boundary: ``"periodic"`` (default) or ``"neumann"``.
        axes: axes to differentiate along (default all).

    Raises:
        ValueError: for an unknown ``boundary``, or ``axes`` that repeat or do not exist.

    Shapes: ``x: S -> y: (len(axes),) + S``.

    Example:
        >>> D = ij.operators.FiniteDifference((64, 64), boundary="neumann")
        >>> D(jnp.ones((64, 64))).shape
        (2, 64, 64)
        >>> ij.operators.FiniteDifference((4,))(jnp.array([0.0, 1.0, 3.0, 6.0]))   # periodic
        Array([[ 1.,  2.,  3., -6.]], dtype=float32)
    """

    shape: tuple[int, ...] = eqx.field(static=True)
    boundary: str = eqx.field(static=True)
    axes: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, shape: ShapeLike, boundary: str = "periodic", axes: Sequence[int] | None = None):
        who = "FiniteDifference"
        self.shape = as_shape(shape, "shape", who)
        if boundary not in _BOUNDARIES:
            raise ValueError(f"{who}: `boundary` must be one of {_BOUNDARIES}, got {boundary!r}")
        self.boundary = boundary
        nd = len(self.shape)
        axes = tuple(range(nd)) if axes is None else tuple(int(a) for a in axes)
        if not axes or any(not -nd <= a < nd for a in axes) or len(set(a % nd for a in axes)) != len(axes):
            raise ValueError(f"{who}: `axes` must be distinct axes of a {nd}-D image, got {axes}")
        self.axes = tuple(a % nd for a in axes)

    @property
    def in_shape(self):
        return self.shape

    @property
    def out_shape(self):
        return (len(self.axes),) + self.shape

    def fourier_symbol(self):
        """``exp(2 pi i k / n) - 1`` per differentiated axis (periodic 2-D images only)."""
        if self.boundary != "periodic" or len(self.shape) != 2:
            return None
        n, m = self.shape
        freqs = (jnp.fft.fftfreq(n)[:, None], jnp.fft.rfftfreq(m)[None, :])
        full = (n, m // 2 + 1)
        return jnp.stack([jnp.broadcast_to(jnp.exp(2j * jnp.pi * freqs[a]) - 1, full) for a in self.axes])

    def gram_diagonal(self):
        total = jnp.zeros(self.shape, jnp.finfo(default_float()).dtype)
        for axis in self.axes:
            n = self.shape[axis]
            idx = jnp.arange(n).reshape([-1 if a == axis else 1 for a in range(len(self.shape))])
            if n == 1:
                count = jnp.zeros_like(idx)
            elif self.boundary == "periodic":
                count = jnp.full(idx.shape, 2)
            else:  # an end pixel has one difference, an interior pixel two
                count = jnp.where((idx == 0) | (idx == n - 1), 1, 2)
            total = total + count
        return total

    def _last_zero(self, v, axis):
        idx = jnp.arange(self.shape[axis]).reshape([-1 if a == axis else 1 for a in range(len(self.shape))])
        return jnp.where(idx == self.shape[axis] - 1, 0, v)

    def mv(self, x):
        out = []
        for axis in self.axes:
            d = jnp.roll(x, -1, axis=axis) - x
            if self.boundary == "neumann":
                d = self._last_zero(d, axis)
            out.append(d)
        return jnp.stack(out)

    def rmv(self, y):
        total = jnp.zeros(self.shape, y.dtype)
        for k, axis in enumerate(self.axes):
            p = y[k]
            if self.boundary == "neumann":
                p = self._last_zero(p, axis)
            total = total + jnp.roll(p, 1, axis=axis) - p
        return total
