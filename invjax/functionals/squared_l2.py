r"""Weighted squared Euclidean distance, the Gaussian data fidelity."""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import ArrayLike, Num, Real

from ._validate import abs2, as_input, as_param, cast_like, check_broadcast, check_step
from .base import Functional, Input, Output, Step, Value


class SquaredL2(Functional):
    r"""Weighted squared distance to ``data``:

    .. math:: f(x) = \tfrac12 \|W^{1/2}(x - y)\|_2^2 = \tfrac12 \sum_i w_i\, |x_i - y_i|^2 ,

    with elementwise weights ``w >= 0`` (default 1) and data ``y`` (default 0). Complex-safe
    (``|.|^2`` of the modulus).

    Proximal map (closed form, elementwise):

    .. math:: \operatorname{prox}_{s f}(v) = \frac{v + s\, w\, y}{1 + s\, w} .

    Gradient ``w (x - y)``, Lipschitz constant ``max(w)`` (1 without weights).

    As the fidelity ``½ ||W^{1/2}(A x - y)||^2`` of a problem, a solver applies ``f`` to
    ``A x``: it reads ``f.data`` (``None`` = 0) and ``f.weights`` (``None`` = 1) directly, e.g.
    for the weighted normal equations ``A^H W A x = A^H W y`` in CG, and ``f.with_data(y)``
    returns a copy that holds the problem's data.

    Arguments:
        data: ``y``, an array broadcastable to the input shape (real or complex), or ``None``.
        weights: ``w``, a real array ``>= 0`` broadcastable to the input shape, or ``None``.

    Shapes and dtypes: any input shape; value is a real scalar of the input's precision;
    ``prox``/``grad`` keep the input dtype (complex if ``data`` is complex).

    Raises:
        ValueError: negative or non-finite weights, non-finite data (when concrete), or
            parameters that do not broadcast to the input shape.

    Example:
        >>> f = ij.functionals.SquaredL2(data=jnp.array([1.0, 2.0]))
        >>> f.prox(jnp.array([4.0, 2.0]), 0.5)        # (v + 0.5 y) / 1.5
        Array([3., 2.], dtype=float32)
    """

    data: jax.Array | None
    weights: jax.Array | None

    smooth: ClassVar[bool] = True
    differentiable: ClassVar[bool] = True

    def __init__(self, data: Num[ArrayLike, "..."] | None = None, weights: Real[ArrayLike, "..."] | None = None):
        self.data = None if data is None else as_param(data, "data", "SquaredL2", allow_complex=True)
        self.weights = None if weights is None else as_param(weights, "weights", "SquaredL2", nonneg=True)

    def with_data(self, data) -> "SquaredL2":
        """A copy of this functional with ``data`` replaced (weights kept)."""
        return SquaredL2(data=data, weights=self.weights)

    def _residual(self, x, who):
        check_broadcast(self.data, x, "data", who)
        check_broadcast(self.weights, x, "weights", who)
        return x if self.data is None else x - cast_like(self.data, x)

    def _w(self, x):
        return cast_like(self.weights, x)

    def __call__(self, x: Input) -> Value:
        x = as_input(x, "SquaredL2")
        r2 = abs2(self._residual(x, "SquaredL2"))
        if self.weights is not None:
            r2 = self._w(x) * r2
        return 0.5 * jnp.sum(r2)

    def grad(self, x: Input) -> Output:
        x = as_input(x, "SquaredL2.grad")
        r = self._residual(x, "SquaredL2.grad")
        return r if self.weights is None else self._w(x) * r

    def prox(self, v: Input, step: Step) -> Output:
        who = "SquaredL2.prox"
        v = as_input(v, who, "v")
        s = check_step(step, v, who)
        self._residual(v, who)  # shape checks
        sw = s if self.weights is None else s * self._w(v)
        num = v if self.data is None else v + sw * cast_like(self.data, v)
        return num / (1 + sw)

    @property
    def lipschitz(self):
        if self.weights is None:
            return jnp.asarray(1.0)
        return jnp.max(self.weights)


