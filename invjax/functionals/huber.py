r"""The Huber function: quadratic near 0, linear in the tails."""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
from jaxtyping import ArrayLike, Real

from ._validate import abs2, as_input, as_param, cast_like, check_step, safe_abs
from .base import Functional, Input, Output, Step, Value


class Huber(Functional):
    r"""Huber loss summed over entries (of the modulus for complex entries):

    .. math:: f(x) = \sum_i h_\delta(|x_i|), \qquad
              h_\delta(r) = \begin{cases} \tfrac12 r^2 & r \le \delta \\
                                          \delta\,(r - \tfrac{\delta}{2}) & r > \delta \end{cases}

    Smooth: ``grad f(x)_i = x_i`` if ``|x_i| <= delta`` else ``delta x_i / |x_i|`` (the
    projection of ``x_i`` onto the disc of radius ``delta``); Lipschitz constant 1.

    Proximal map (closed form, elementwise):

    .. math:: \operatorname{prox}_{s f}(v)_i = \begin{cases}
              \dfrac{v_i}{1 + s} & |v_i| \le \delta (1 + s) \\[4pt]
              v_i \Big(1 - \dfrac{s \delta}{|v_i|}\Big) & |v_i| > \delta (1 + s) \end{cases}

    Arguments:
        delta: ``delta > 0``, the threshold between the quadratic and linear parts (a scalar
            or an array broadcastable to the input; array leaf, default 1.0).

    Shapes and dtypes: any input shape, real or complex; the value is a real scalar of the
    input's precision, ``prox`` and ``grad`` keep the input dtype.

    Raises:
        ValueError: ``delta`` not finite or ``<= 0`` (when concrete).

    Example:
        >>> f = ij.functionals.Huber(delta=1.0)
        >>> f(jnp.array([0.5, 3.0]))                      # 0.125 + (3 - 0.5)
        Array(2.625, dtype=float32)
        >>> jnp.round(f.prox(jnp.array([0.5, 3.0]), 1.0), 4)   # v / 2; v - delta where |v| > 2
        Array([0.25, 2.  ], dtype=float32)
    """

    delta: jax.Array

    smooth: ClassVar[bool] = True
    differentiable: ClassVar[bool] = True

    def __init__(self, delta: Real[ArrayLike, "..."] = 1.0):
        self.delta = as_param(delta, "delta", "Huber", positive=True)

    def __call__(self, x: Input) -> Value:
        x = as_input(x, "Huber")
        d = cast_like(self.delta, x)
        r = safe_abs(x)
        return jnp.sum(jnp.where(r <= d, 0.5 * abs2(x), d * (r - 0.5 * d)))

    def grad(self, x: Input) -> Output:
        x = as_input(x, "Huber.grad")
        d = cast_like(self.delta, x)
        r = safe_abs(x)
        return x * jnp.where(r <= d, 1, d / jnp.where(r > 0, r, 1))

    def prox(self, v: Input, step: Step) -> Output:
        who = "Huber.prox"
        v = as_input(v, who, "v")
        s = check_step(step, v, who)
        d = cast_like(self.delta, v)
        r = safe_abs(v)
        lin = 1 - s * d / jnp.where(r > 0, r, 1)
        return v * jnp.where(r <= d * (1 + s), 1 / (1 + s), lin)

    @property
    def lipschitz(self):
        return jnp.asarray(1.0)
