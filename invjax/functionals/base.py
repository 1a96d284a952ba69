r"""Functional base class: value, proximal map, conjugate prox (Moreau), scaling.

A functional ``f: R^n -> R ∪ {+inf}`` (or ``C^n``, treated as ``R^{2n}`` with the inner product
``Re <x, y>``) is a frozen equinox module: its parameters (weights, data, bounds) are array
leaves, so a functional can be passed through ``jax.jit``, ``jax.vmap`` and ``jax.grad`` and
differentiated with respect to its parameters.

Every functional supplies

* ``f(x)`` -- the value, a real scalar of the precision of ``x`` (``+inf`` outside the domain);
* ``f.prox(v, step)`` -- the proximal map

  .. math:: \operatorname{prox}_{s f}(v) = \arg\min_x\; s f(x) + \tfrac12 \|x - v\|_2^2 ;

and inherits

* ``f.prox_conj(v, step)`` -- the proximal map of the convex conjugate ``f^*``, by the Moreau
  decomposition (written once, here):

  .. math:: \operatorname{prox}_{s f^*}(v) = v - s \operatorname{prox}_{f/s}(v / s) ;

* ``f.composite(shape) -> (K, g)`` with ``f(x) = g(K x)`` and ``g`` a functional with an
  exact prox (``K`` the identity by default; ``TV`` returns the finite differences and the
  mixed norm), for splitting solvers such as ADMM and PDHG;
* ``c * f`` (``c >= 0``): :class:`Scaled`, whose prox scales the step.

Smooth functionals also give ``f.grad(x)`` and set ``smooth = True``; ``f.lipschitz`` is the
Lipschitz constant of the gradient where known (``None`` otherwise). For complex ``x``,
``grad`` is the gradient for the real inner product ``Re <x, y>``, i.e.
``df/dRe(x) + i df/dIm(x)``, which is the complex conjugate of what ``jax.grad`` returns.

Steps are real scalars (Python floats or 0-d arrays, possibly traced). A concrete negative or
non-finite step raises ``ValueError`` (``prox_conj`` needs ``step > 0``). Outputs keep the
dtype of ``v``; parameters are cast to its precision.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from ..operators.base import Identity, LinearOperator
from ._validate import as_input, as_param, check_step


class Functional(eqx.Module):
    """Abstract convex functional with a proximal map (see the module docstring).

    Class attributes:
        smooth: ``True`` when ``f`` is differentiable everywhere with a Lipschitz gradient
            and ``grad`` is implemented (gradient steps in FISTA apply).
        indicator: ``True`` when ``f`` is the indicator of a convex set (value 0 or
            ``+inf``; the prox is the projection and does not depend on ``step``).
    """

    smooth: ClassVar[bool] = False
    indicator: ClassVar[bool] = False

    def __call__(self, x: jax.Array) -> jax.Array:
        raise NotImplementedError

    def prox(self, v: jax.Array, step) -> jax.Array:
        r"""``argmin_x step * f(x) + ||x - v||^2 / 2``, same shape and dtype as ``v``."""
        raise NotImplementedError

    def prox_conj(self, v: jax.Array, step) -> jax.Array:
        r"""Prox of the convex conjugate: ``argmin_u step * f^*(u) + ||u - v||^2 / 2``.

        Computed from ``prox`` by the Moreau decomposition
        ``prox_{s f^*}(v) = v - s prox_{f/s}(v/s)``; requires ``step > 0``.
        """
        who = f"{type(self).__name__}.prox_conj"
        v = as_input(v, who, "v")
        s = check_step(step, v, who, strict=True)
        return v - s * self.prox(v / s, 1 / s)

    def grad(self, x: jax.Array) -> jax.Array:
        """Gradient of ``f`` at ``x`` (smooth functionals only)."""
        raise NotImplementedError(
            f"{type(self).__name__} is not differentiable; use its prox (e.g. in FISTA/ADMM/PDHG)"
        )

    @property
    def lipschitz(self) -> jax.Array | None:
        """Lipschitz constant of ``grad`` (a real scalar), or ``None`` when unknown/not smooth."""
        return None

    def composite(self, shape) -> tuple[LinearOperator, "Functional"]:
        """``(K, g)`` with ``f(x) = g(K x)`` for ``x`` of shape ``shape``, ``g`` with exact prox.

        The default is ``(Identity(shape), self)``; functionals of a linear map (``TV``)
        override it so that splitting solvers can take exact prox steps of ``g``.
        """
        return Identity(shape), self

    # ---- scaling ----------------------------------------------------------------------------
    def __mul__(self, scale):
        if isinstance(scale, (Functional, LinearOperator)):
            return NotImplemented
        return Scaled(self, scale)

    __rmul__ = __mul__

    def __truediv__(self, scale):
        if isinstance(scale, (Functional, LinearOperator)):
            return NotImplemented
        return Scaled(self, 1 / jnp.asarray(scale))


class Scaled(Functional):
    r"""A non-negative multiple ``(c f)(x) = c f(x)``, usually written ``c * f``.

    .. math:: \operatorname{prox}_{s (c f)}(v) = \operatorname{prox}_{(s c) f}(v),
              \qquad \nabla (c f) = c \nabla f .

    ``c * (d * f)`` collapses to ``(c d) * f``. ``c = 0`` is allowed (the prox is then
    ``f.prox(v, 0)``: the identity for finite functionals, the projection for indicators).

    Args:
        functional: the functional ``f``.
        scale: ``c >= 0``, a real scalar (array leaf: may be traced, vmapped, differentiated).

    Example:
        >>> from invjax.functionals import L1
        >>> reg = 0.5 * L1()
        >>> reg.prox(jnp.array([-2.0, 0.2, 3.0]), 2.0)    # L1().prox(v, 1.0)
        Array([-1.,  0.,  2.], dtype=float32)
    """

    functional: Functional
    scale: jax.Array

    def __init__(self, functional: Functional, scale):
        if not isinstance(functional, Functional):
            raise TypeError(f"Scaled: `functional` must be a Functional, got {type(functional).__name__}")
        scale = as_param(scale, "scale", "Scaled", nonneg=True)
        if scale.ndim != 0:
            raise ValueError(f"Scaled: `scale` must be a scalar, got shape {scale.shape}")
        if isinstance(functional, Scaled):
            scale = scale * functional.scale
            functional = functional.functional
        self.functional = functional
        self.scale = scale

    @property
    def smooth(self) -> bool:  # type: ignore[override]
        return self.functional.smooth

    @property
    def indicator(self) -> bool:  # type: ignore[override]
        return self.functional.indicator

    def _c(self, x):
        return self.scale.astype(jnp.finfo(jnp.asarray(x).dtype).dtype)

    def __call__(self, x):
        val = self.functional(x)
        if self.functional.indicator:
            return val  # 0 * (+inf) would be NaN; c * indicator = indicator for c >= 0
        return self._c(val) * val

    def prox(self, v, step):
        v = as_input(v, "Scaled.prox", "v")
        s = check_step(step, v, "Scaled.prox")
        return self.functional.prox(v, s * self._c(v))

    def grad(self, x):
        g = self.functional.grad(x)
        return self._c(g) * g

    @property
    def lipschitz(self):
        lip = self.functional.lipschitz
        return None if lip is None else self.scale * lip

    def composite(self, shape):
        op, inner = self.functional.composite(shape)
        return op, Scaled(inner, self.scale)
