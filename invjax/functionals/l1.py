r"""The (weighted) l1 norm and its prox, soft-thresholding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import ArrayLike, Real

from ._validate import as_input, as_param, cast_like, check_broadcast, check_step, is_complex, safe_abs, shrink
from .base import Functional, Input, Output, Step, Value


class L1(Functional):
    r"""Weighted l1 norm:

    .. math:: f(x) = \sum_i w_i\, |x_i| ,

    with elementwise weights ``w >= 0`` (default 1); ``|.|`` is the modulus for complex ``x``.

    Proximal map: soft-thresholding of the modulus (keeps the phase of complex entries),

    .. math:: \operatorname{prox}_{s f}(v)_i = v_i \max\Big(1 - \frac{s w_i}{|v_i|},\, 0\Big)
              \;=\; \operatorname{sign}(v_i) \max(|v_i| - s w_i, 0) \text{ (real)} .

    The conjugate is the indicator of ``{u : |u_i| <= w_i}``, so ``prox_conj`` is the
    projection onto that box (clipping the modulus to ``w``).

    Arguments:
        weights: ``w``, a real array ``>= 0`` broadcastable to the input shape, or ``None``.

    Shapes and dtypes: any input shape, real or complex; the value is a real scalar of the
    input's precision, ``prox`` keeps the input dtype. The value and prox are differentiable
    everywhere except on the kinks (the derivative at ``x = 0`` is finite, never NaN).

    Raises:
        ValueError: negative or non-finite weights (when concrete), or weights that do not
            broadcast to the input shape.

    Example:
        >>> ij.functionals.L1().prox(jnp.array([-2.0, 0.5, 3.0]), 1.0)
        Array([-1.,  0.,  2.], dtype=float32)
    """

    weights: jax.Array | None

    def __init__(self, weights: Real[ArrayLike, "..."] | None = None):
        self.weights = None if weights is None else as_param(weights, "weights", "L1", nonneg=True)

    def _t(self, x, scale, who):
        check_broadcast(self.weights, x, "weights", who)
        return scale if self.weights is None else scale * cast_like(self.weights, x)

    def __call__(self, x: Input) -> Value:
        x = as_input(x, "L1")
        return jnp.sum(self._t(x, 1, "L1") * safe_abs(x))

    def prox(self, v: Input, step: Step) -> Output:
        who = "L1.prox"
        v = as_input(v, who, "v")
        s = check_step(step, v, who)
        return shrink(v, safe_abs(v), self._t(v, s, who))

    def manifold(self, w, step, floor=0.0, max_curvature=None):
        """Pinned: the entries of the soft-thresholded point with modulus at most ``floor``.
        (Real entries have no curvature; a complex one ``w_i / |z_i|`` along its phase.)"""
        z = self.prox(w, step)
        mag = safe_abs(z)
        pinned = mag <= floor
        if max_curvature is not None and is_complex(z.dtype):
            least = self._t(mag, 1, "L1.manifold") / max_curvature
            z = z * jnp.maximum(1, least / jnp.where(mag > 0, mag, 1))
        return jnp.where(pinned, 0, z), pinned

    def manifold_grad(self, u, pinned):
        """``w_i u_i / |u_i|`` off the pinned entries, 0 on them."""
        u = as_input(u, "L1.manifold_grad", "u")
        mag = safe_abs(u)
        free = ~pinned & (mag > 0)
        return jnp.where(free, self._t(u, 1, "L1.manifold_grad") * u / jnp.where(free, mag, 1), 0).astype(u.dtype)
