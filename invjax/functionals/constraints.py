r"""Indicator functions of boxes: non-negativity and bound constraints (prox = projection)."""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Real

from ..operators.base import concrete_or_none
from ._validate import as_input, as_param, cast_like, check_broadcast, check_step, real_dtype
from .base import Functional, RealInput, RealOutput, Step, Value


def _indicator(ok, x):
    return jnp.where(jnp.all(ok), 0.0, jnp.inf).astype(real_dtype(x.dtype))


class NonNegative(Functional):
    r"""Indicator of the non-negative orthant:

    .. math:: f(x) = \iota_{\ge 0}(x) = \begin{cases} 0 & x_i \ge 0 \ \forall i \\
              +\infty & \text{otherwise} \end{cases}

    Proximal map (for every step): the projection ``prox(v) = max(v, 0)``. The conjugate is
    the indicator of ``x <= 0``, so ``prox_conj(v) = min(v, 0)``.

    Shapes and dtypes: real inputs of any shape (complex raises ``TypeError``); the value is
    0 or ``inf`` in the input's precision (exact test, no tolerance).

    Example:
        >>> f = ij.functionals.NonNegative()
        >>> f.prox(jnp.array([-1.0, 2.0]), 0.5), f(jnp.array([-1.0, 2.0]))
        (Array([0., 2.], dtype=float32), Array(inf, dtype=float32))
    """

    indicator: ClassVar[bool] = True

    def __call__(self, x: RealInput) -> Value:
        x = as_input(x, "NonNegative", real=True)
        return _indicator(x >= 0, x)

    def prox(self, v: RealInput, step: Step) -> RealOutput:
        who = "NonNegative.prox"
        v = as_input(v, who, "v", real=True)
        check_step(step, v, who)
        return jnp.maximum(v, 0)

    def manifold(self, w, step, floor=0.0, max_curvature=None):
        """Pinned: the coordinates the projection clips (``w < 0``)."""
        return jnp.maximum(w, 0), w < 0

    def manifold_grad(self, u, pinned):
        return jnp.zeros_like(u)


class Box(Functional):
    r"""Indicator of the box ``{x : lower <= x <= upper}`` (elementwise):

    .. math:: f(x) = \begin{cases} 0 & l_i \le x_i \le u_i \ \forall i \\
              +\infty & \text{otherwise} \end{cases}

    Proximal map (for every step): the projection ``prox(v) = clip(v, lower, upper)``.

    Arguments:
        lower: ``l``, a real scalar or array broadcastable to the input (``-inf`` allowed).
        upper: ``u``, a real scalar or array broadcastable to the input (``+inf`` allowed).

    Shapes and dtypes: real inputs of any shape (complex raises ``TypeError``); the value is
    0 or ``inf`` in the input's precision, ``prox`` keeps the input dtype.

    Raises:
        ValueError: NaN bounds, or ``lower > upper`` anywhere (when concrete), or bounds that
            do not broadcast to the input shape.

    Example:
        >>> ij.functionals.Box(0.0, 1.0).prox(jnp.array([-0.5, 0.3, 2.0]), 1.0)
        Array([0. , 0.3, 1. ], dtype=float32)
    """

    lower: jax.Array
    upper: jax.Array

    indicator: ClassVar[bool] = True

    def __init__(self, lower: Real[ArrayLike, "..."], upper: Real[ArrayLike, "..."]):
        self.lower = as_param(lower, "lower", "Box", allow_inf=True)
        self.upper = as_param(upper, "upper", "Box", allow_inf=True)
        lo, hi = concrete_or_none(self.lower), concrete_or_none(self.upper)
        if lo is not None and hi is not None:
            try:
                bad = np.any(lo > hi)
            except ValueError as err:
                raise ValueError(
                    f"Box: `lower` (shape {lo.shape}) and `upper` (shape {hi.shape}) must broadcast"
                ) from err
            if bad:
                if lo.size == 1 and hi.size == 1:
                    shown = f"lower={lo.item()!r}, upper={hi.item()!r}"
                else:
                    n_bad = int(np.sum(np.broadcast_to(lo > hi, np.broadcast_shapes(lo.shape, hi.shape))))
                    shown = f"{n_bad} entries with lower > upper"
                raise ValueError(f"Box: `lower` must be <= `upper` everywhere, got {shown}")

    def _bounds(self, x, who):
        check_broadcast(self.lower, x, "lower", who)
        check_broadcast(self.upper, x, "upper", who)
        return cast_like(self.lower, x), cast_like(self.upper, x)

    def __call__(self, x: RealInput) -> Value:
        x = as_input(x, "Box", real=True)
        lo, hi = self._bounds(x, "Box")
        return _indicator((x >= lo) & (x <= hi), x)

    def prox(self, v: RealInput, step: Step) -> RealOutput:
        who = "Box.prox"
        v = as_input(v, who, "v", real=True)
        check_step(step, v, who)
        lo, hi = self._bounds(v, who)
        return jnp.minimum(jnp.maximum(v, lo), hi)

    def manifold(self, w, step, floor=0.0, max_curvature=None):
        """Pinned: the coordinates the projection clips (``w`` outside the box)."""
        lo, hi = self._bounds(w, "Box.manifold")
        return jnp.minimum(jnp.maximum(w, lo), hi), (w < lo) | (w > hi)

    def manifold_grad(self, u, pinned):
        return jnp.zeros_like(u)
