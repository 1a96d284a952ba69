r"""The mixed l2,1 norm (sum of group Euclidean norms) and its prox, group soft-thresholding."""

from __future__ import annotations

import operator

import equinox as eqx
import jax.numpy as jnp

from ._validate import as_input, check_step, group_norm, shrink
from .base import Functional, Input, Output, Step, Value


class L21(Functional):
    r"""Mixed norm: the sum over groups of the Euclidean norm along ``axis``.

    .. math:: f(x) = \sum_{j} \|x_{\cdot, j}\|_2
              = \sum_j \Big(\sum_k |x_{k, j}|^2\Big)^{1/2} ,

    where ``k`` runs along ``axis`` (the group axis) and ``j`` over all other axes. With
    ``axis=0`` and ``x = D u`` the stacked image gradient, this is the isotropic total
    variation of ``u``.

    Proximal map: group soft-thresholding,

    .. math:: \operatorname{prox}_{s f}(v)_{\cdot, j} = v_{\cdot, j}
              \max\Big(1 - \frac{s}{\|v_{\cdot, j}\|_2},\, 0\Big) .

    The conjugate is the indicator of ``{u : ||u_{., j}||_2 <= 1 for all j}``, so
    ``prox_conj`` projects every group onto the unit ball.

    The group norm is computed safely: value, prox and their derivatives are finite (no NaN)
    when a group is exactly zero.

    Arguments:
        axis: the group axis (a Python int, negative counts from the end; default 0).

    Shapes and dtypes: inputs with at least one axis, real or complex; the value is a real
    scalar of the input's precision, ``prox`` keeps the input's shape and dtype.

    Raises:
        TypeError: ``axis`` not an int.
        ValueError: ``axis`` out of range for the input.

    Example:
        >>> v = jnp.array([[3.0, 0.1], [4.0, 0.0]])      # groups (3, 4) and (0.1, 0) on axis 0
        >>> ij.functionals.L21()(v)
        Array(5.1, dtype=float32)
        >>> ij.functionals.L21().prox(v, 1.0)              # (3, 4) * (1 - 1/5); the small group -> 0
        Array([[2.4, 0. ],
               [3.2, 0. ]], dtype=float32)
    """

    axis: int = eqx.field(static=True)

    def __init__(self, axis: int = 0):
        try:
            self.axis = operator.index(axis)
        except TypeError as err:
            raise TypeError(f"L21: `axis` must be an int, got {axis!r}") from err

    def _axis(self, x, who):
        if x.ndim == 0 or not -x.ndim <= self.axis < x.ndim:
            raise ValueError(
                f"{who}: `axis`={self.axis} is out of range for an input of shape {x.shape}"
            )
        return self.axis % x.ndim

    def __call__(self, x: Input) -> Value:
        x = as_input(x, "L21")
        return jnp.sum(group_norm(x, self._axis(x, "L21")))

    def prox(self, v: Input, step: Step) -> Output:
        who = "L21.prox"
        v = as_input(v, who, "v")
        s = check_step(step, v, who)
        axis = self._axis(v, who)
        return shrink(v, group_norm(v, axis, keepdims=True), s)

    def manifold(self, w, step, floor=0.0, max_curvature=None):
        """Pinned: the groups of the group-soft-thresholded point with norm at most ``floor``;
        with ``max_curvature``, free groups are lifted to norm at least ``1 / max_curvature``."""
        z = self.prox(w, step)
        norm = group_norm(z, self._axis(z, "L21.manifold"), keepdims=True)
        pinned = norm <= floor
        if max_curvature is not None:
            z = z * jnp.maximum(1, (1 / max_curvature) / jnp.where(norm > 0, norm, 1))
        return jnp.where(pinned, 0, z), pinned

    def manifold_grad(self, u, pinned):
        """``u_j / ||u_j||`` for the free groups ``j``, 0 for the pinned ones."""
        u = as_input(u, "L21.manifold_grad", "u")
        norm = group_norm(u, self._axis(u, "L21.manifold_grad"), keepdims=True)
        free = ~pinned & (norm > 0)
        return jnp.where(free, u / jnp.where(free, norm, 1), 0).astype(u.dtype)
