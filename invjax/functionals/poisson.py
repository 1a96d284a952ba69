r"""Poisson negative log-likelihood (Kullback-Leibler data fidelity) with a background."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import ArrayLike, Real

from ._validate import as_input, as_param, cast_like, check_broadcast, check_step, safe_sqrt
from .base import Functional, RealInput, RealOutput, Step, Value


class PoissonLikelihood(Functional):
    r"""Poisson negative log-likelihood of counts ``y`` given the mean ``x + b``:

    .. math:: f(x) = \sum_i \big[(x_i + b_i) - y_i \log(x_i + b_i)\big] \;(+\, c),

    with ``0 log 0 = 0``. Its domain is ``x + b >= 0`` (``x + b > 0`` where ``y > 0``); outside
    it the value is ``+inf``. With ``normalized=True`` (default) the constant
    ``c = sum_i y_i log y_i - y_i`` is added, giving the generalised Kullback-Leibler
    divergence ``KL(y, x + b) = sum (x + b) - y - y log((x + b) / y)``, which is ``>= 0`` and
    0 exactly at ``x = y - b``.

    Proximal map (closed form, elementwise; the non-negative root of a quadratic): with
    ``u = v + b``,

    .. math:: \operatorname{prox}_{s f}(v) = \tfrac12\Big(u - s + \sqrt{(u - s)^2 + 4 s y}\Big) - b ,

    evaluated in a cancellation-free form when ``u < s``. The result always satisfies
    ``x + b >= 0`` (``> 0`` where ``y > 0`` and ``s > 0``).

    ``grad(x) = 1 - y / (x + b)`` is available on the interior of the domain; ``f`` is not
    smooth in the sense of a global Lipschitz gradient (``smooth = False``).

    As the fidelity of a problem ``f(A x)``, a solver reads ``f.data`` and ``f.background``;
    ``PoissonLikelihood(background=b).with_data(y)`` builds the functional from a problem's
    data.

    Arguments:
        data: counts ``y >= 0`` (real array broadcastable to the input), or ``None`` to be
            supplied later with ``with_data`` (using the functional before raises).
        background: ``b >= 0``, a real scalar or array broadcastable to the input (default 0).
        normalized: add the constant that makes the value a KL divergence (default ``True``,
            static).

    Shapes and dtypes: real inputs of any shape (complex raises ``TypeError``); the value is
    a real scalar of the input's precision; ``prox`` keeps the input dtype.

    Raises:
        ValueError: negative or non-finite data/background (when concrete), parameters that
            do not broadcast to the input, or missing data at use.
        TypeError: if ``normalized`` is not a bool, or the input is complex.

    Example:
        >>> f = ij.functionals.PoissonLikelihood(data=jnp.array([2.0, 0.0]))
        >>> f(jnp.array([2.0, 0.0]))                       # KL(y, y) = 0
        Array(0., dtype=float32)
        >>> f.prox(jnp.array([1.0, 1.0]), 1.0)             # (v - s + sqrt((v - s)^2 + 4 s y)) / 2
        Array([1.4142135, 0.       ], dtype=float32)
    """

    data: jax.Array | None
    background: jax.Array
    normalized: bool = eqx.field(static=True)

    differentiable: ClassVar[bool] = True

    def __init__(
        self,
        data: Real[ArrayLike, "..."] | None = None,
        background: Real[ArrayLike, "..."] = 0.0,
        normalized: bool = True,
    ):
        who = "PoissonLikelihood"
        self.data = None if data is None else as_param(data, "data", who, nonneg=True)
        self.background = as_param(background, "background", who, nonneg=True)
        if not isinstance(normalized, bool):
            raise TypeError(f"{who}: `normalized` must be a bool, got {normalized!r}")
        self.normalized = normalized

    def with_data(self, data) -> "PoissonLikelihood":
        """A copy of this functional with ``data`` replaced (background kept)."""
        return PoissonLikelihood(data, self.background, self.normalized)

    def _params(self, x, who):
        if self.data is None:
            raise ValueError(
                f"{who}: no `data`; construct PoissonLikelihood(data=y, ...) or call .with_data(y)"
            )
        check_broadcast(self.data, x, "data", who)
        check_broadcast(self.background, x, "background", who)
        return cast_like(self.data, x), cast_like(self.background, x)

    def __call__(self, x: RealInput) -> Value:
        who = "PoissonLikelihood"
        x = as_input(x, who, real=True)
        y, b = self._params(x, who)
        z = x + b
        pos_y = y > 0
        z_safe = jnp.where(z > 0, z, 1)
        if self.normalized:
            y_safe = jnp.where(pos_y, y, 1)
            term = jnp.where(pos_y, z - y + y * (jnp.log(y_safe) - jnp.log(z_safe)), z)
        else:
            term = jnp.where(pos_y, z - y * jnp.log(z_safe), z)
        outside = (z < 0) | ((z == 0) & pos_y)
        term = jnp.where(outside, jnp.inf, term)
        return jnp.sum(jnp.broadcast_to(term, x.shape))

    def grad(self, x: RealInput) -> RealOutput:
        who = "PoissonLikelihood.grad"
        x = as_input(x, who, real=True)
        y, b = self._params(x, who)
        z = x + b
        return jnp.broadcast_to(1 - y / z, x.shape)

    def prox(self, v: RealInput, step: Step) -> RealOutput:
        who = "PoissonLikelihood.prox"
        v = as_input(v, who, "v", real=True)
        s = check_step(step, v, who)
        y, b = self._params(v, who)
        a = v + b - s
        disc = safe_sqrt(a * a + 4 * s * y)
        neg = a < 0
        z = jnp.where(neg, 2 * s * y / jnp.where(neg, disc - a, 1), (a + disc) / 2)
        return jnp.broadcast_to(z - b, v.shape).astype(v.dtype)
