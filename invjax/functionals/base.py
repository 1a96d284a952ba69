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
Lipschitz constant of the gradient where known (``None`` otherwise). ``differentiable = True``
marks every functional with a ``grad`` that is itself differentiable almost everywhere (the
smooth ones, and ``PoissonLikelihood`` on its domain): implicit derivatives take its Hessian
by a JVP of ``grad``.

Non-smooth functionals with a simple prox (``L1``, ``L21``, ``NonNegative``, ``Box``) describe
their *active manifold* for implicit differentiation (Vaiter, Deledalle, Peyré, Dossal & Fadili,
"Local behavior of sparse analysis regularization", ACHA 2013): near a solution, ``f`` is smooth
on the set of points that keep the same zero pattern (or the same clipped coordinates), so the
solution is a smooth function of the problem's parameters on it. ``f.manifold(w, step,
max_curvature)`` returns ``(z, pinned)``, the prox point ``z = prox_{step f}(w)`` and the
coordinates that stay fixed (a zero of ``L1``, a zero group of ``L21``, a clipped coordinate of
a box); ``f.manifold_grad(u, pinned)`` is the gradient of ``f`` restricted to the manifold (its
Jacobian the curvature there, e.g. ``(I - n n^T) / |u|`` for a group norm). For complex ``x``,
``grad`` is the gradient for the real inner product ``Re <x, y>``, i.e.
``df/dRe(x) + i df/dIm(x)``, which is the complex conjugate of what ``jax.grad`` returns.

Steps are real scalars (Python floats or 0-d arrays, possibly traced). A concrete negative or
non-finite step raises ``ValueError`` (``prox_conj`` needs ``step > 0``). Outputs keep the
dtype of ``v``; parameters are cast to its precision.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Inexact, Num, Real

from ..operators.base import Identity, LinearOperator
from ._validate import as_input, as_param, check_step

# The signatures of value, prox and gradient (shapes bind per call: prox keeps v's shape).
Value = Float[Array, ""]  # a real scalar of the input's precision
Step = Real[ArrayLike, ""]  # a real scalar step (Python float or 0-d array, may be traced)
Input = Num[ArrayLike, "*shape"]  # real or complex; integers promote to the default float
Output = Inexact[Array, "*shape"]
RealInput = Real[ArrayLike, "*shape"]
RealOutput = Float[Array, "*shape"]


class Functional(eqx.Module):
    r"""Abstract convex functional with a proximal map (see the module docstring).

    A subclass implements the abstract ``__call__`` (the value) and ``prox`` (the proximal
    map :math:`\arg\min_x s f(x) + \tfrac12\|x - v\|^2`); one that lacks either raises
    ``TypeError`` at construction. It inherits ``prox_conj`` (Moreau), ``composite`` and
    scaling ``c * f``.

    Class attributes:
        smooth: ``True`` when ``f`` is differentiable everywhere with a Lipschitz gradient
            and ``grad`` is implemented (gradient steps in FISTA apply).
        indicator: ``True`` when ``f`` is the indicator of a convex set (value 0 or
            ``+inf``; the prox is the projection and does not depend on ``step``).

    Example:
        >>> class Abs(ij.functionals.Functional):
        ...     def __call__(self, x):
        ...         return jnp.sum(jnp.abs(x))
        ...     def prox(self, v, step):
        ...         return jnp.sign(v) * jnp.maximum(jnp.abs(v) - step, 0)
        >>> v = jnp.array([-3.0, 0.5, 2.0])
        >>> Abs().prox(v, 1.0), Abs().prox_conj(v, 1.0)    # prox_conj: clip to [-1, 1]
        (Array([-2.,  0.,  1.], dtype=float32), Array([-1. ,  0.5,  1. ], dtype=float32))
    """

    smooth: ClassVar[bool] = False
    indicator: ClassVar[bool] = False
    differentiable: ClassVar[bool] = False

    @abc.abstractmethod
    def __call__(self, x: Input) -> Value:
        """The value ``f(x)``: a real scalar of the precision of ``x`` (``+inf`` off the domain)."""

    @abc.abstractmethod
    def prox(self, v: Input, step: Step) -> Output:
        r"""``argmin_x step * f(x) + ||x - v||^2 / 2``, same shape and dtype as ``v``."""

    def prox_conj(self, v: Input, step: Step) -> Output:
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

    # ---- implicit differentiation ---------------------------------------------------------------
    def manifold(self, w: jax.Array, step, floor=0.0, max_curvature=None) -> tuple[jax.Array, jax.Array]:
        """``(z, pinned)``: the prox point ``z = prox_{step f}(w)`` and a boolean mask
        (broadcastable to ``w``) of the coordinates pinned on ``f``'s active manifold there.

        At a solution with dual ``p`` of the term ``f(u)``, ``u = z`` when ``w = u + step p``.
        Entries (groups) of ``z`` whose modulus is at most ``floor`` count as zeros: at the
        accuracy of an iterative solve they cannot be told from exact zeros. With
        ``max_curvature``, a free entry whose curvature on the manifold would exceed it (a norm
        ``c |u|`` near 0 has ``c / |u|`` across ``u``) is moved away from 0 along its own direction
        until it does not: the gradient on the manifold, ``c u / |u|``, is unchanged there, and
        the derivative system is spared a stiffness that only rounding put there.

        Raises:
            NotImplementedError: for functionals without this structure (then implicit
                derivatives through a non-smooth use of ``f`` are not available; use
                ``diff="unroll"``).
        """
        raise NotImplementedError(
            f"{type(self).__name__} describes no active manifold: implicit derivatives through it are not available "
            "(use diff='unroll')"
        )

    def manifold_grad(self, u: jax.Array, pinned: jax.Array) -> jax.Array:
        """The gradient of ``f`` at ``u`` restricted to its active manifold: 0 on ``pinned``
        coordinates, smooth in ``u`` elsewhere (its JVP is the curvature on the manifold)."""
        if self.differentiable:
            return self.grad(u)
        raise NotImplementedError(f"{type(self).__name__} describes no active manifold")

    # ---- warm-started proximal maps ---------------------------------------------------------------
    def prox_warm(self, v: jax.Array, step, state=None, max_iters: int | None = None):
        """``(prox_{step f}(v), state)``: the prox with a warm start for iterative proxes.

        For a functional whose prox is itself iterative (``TV``), ``state`` is its dual variable
        ``q`` with ``prox_{step f}(v) = v - K^H q`` (``K`` from :meth:`composite`): pass the
        returned state back at the next call. ``max_iters`` (an int) runs that many inner
        iterations in a reverse-mode differentiable scan instead of a tolerance loop. Closed-form
        proxes return ``state`` unchanged (``None``).
        """
        return self.prox(v, step), state

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

    Arguments:
        functional: the functional ``f``.
        scale: ``c >= 0``, a real scalar (array leaf: may be traced, vmapped, differentiated).

    Raises:
        TypeError: if ``functional`` is not a :class:`Functional`.
        ValueError: if ``scale`` is not a scalar, negative or not finite (when concrete).

    Example:
        >>> reg = 0.5 * ij.functionals.L1()
        >>> reg.prox(jnp.array([-2.0, 0.2, 3.0]), 2.0)    # L1().prox(v, 1.0)
        Array([-1.,  0.,  2.], dtype=float32)
    """

    functional: Functional
    scale: Float[Array, ""]

    def __init__(self, functional: Functional, scale: Real[ArrayLike, ""]):
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

    @property
    def differentiable(self) -> bool:  # type: ignore[override]
        return self.functional.differentiable

    def _c(self, x):
        return self.scale.astype(jnp.finfo(jnp.asarray(x).dtype).dtype)

    def __call__(self, x: Input) -> Value:
        val = self.functional(x)
        if self.functional.indicator:
            return val  # 0 * (+inf) would be NaN; c * indicator = indicator for c >= 0
        return self._c(val) * val

    def prox(self, v: Input, step: Step) -> Output:
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

    def manifold(self, w, step, floor=0.0, max_curvature=None):
        c = self._c(w)
        if max_curvature is not None:
            max_curvature = jnp.where(c > 0, max_curvature / jnp.where(c > 0, c, 1), jnp.inf)
        return self.functional.manifold(w, step * c, floor, max_curvature)

    def manifold_grad(self, u, pinned):
        g = self.functional.manifold_grad(u, pinned)
        return self._c(g) * g

    def prox_warm(self, v, step, state=None, max_iters=None):
        return self.functional.prox_warm(v, step * self._c(v), state, max_iters)
