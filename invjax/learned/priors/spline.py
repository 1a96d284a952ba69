r"""Learned 1-D linear splines with bounded slopes (the activations of ridge regularizers).

A :class:`LinearSpline` holds ``C`` continuous piecewise-linear functions
``sigma_c: R -> R`` on a shared uniform grid of ``m`` knots (``m`` odd, so that 0 is a knot)

.. math:: t_j = -r + j \Delta, \qquad \Delta = \frac{2 r}{m - 1}, \qquad j = 0, \dots, m - 1,

with ``sigma_c(0) = 0``, linear between the knots and extended linearly outside ``[-r, r]``.
Its antiderivative ``psi_c(t) = \int_0^t sigma_c`` is the piecewise-quadratic *potential*
(``psi_c(0) = 0``, ``psi_c' = sigma_c``, ``psi_c''`` the slope of ``sigma_c``).

**The constraints are a parametrisation.** The module stores unconstrained raw slopes
``s~_{c,k}`` (one per interval ``[t_k, t_{k+1}]``); every call maps them to a valid spline:

1. clip: ``s_{c,k} = min(max(s~_{c,k}, lower), upper)``;
2. knot values, walking outwards from ``sigma_c(0) = 0`` and holding a value at zero where it
   would change sign:

   .. math:: \sigma_c(t_{j+1}) = \max\big(0,\ \sigma_c(t_j) + \Delta s_{c,j}\big) \ (t_j \ge 0),
             \qquad
             \sigma_c(t_{j-1}) = \min\big(0,\ \sigma_c(t_j) - \Delta s_{c,j-1}\big) \ (t_j \le 0);

3. outside ``[-r, r]`` the end slopes continue, raised to 0 if negative.

Every slope of the result lies in ``[lower, upper]`` and ``t sigma_c(t) >= 0``, so ``psi_c`` is
non-decreasing in ``|t|`` with ``psi_c >= psi_c(0) = 0``. With ``lower >= 0`` (each ``sigma_c``
non-decreasing, ``psi_c`` convex) steps 2 and 3 change nothing; with ``lower = -1`` each
``psi_c`` is 1-weakly convex (``psi_c + t^2 / 2`` convex) and still bounded below, so a
variational problem ``F(x) + lambda sum psi_c(...)`` with ``F >= 0`` is bounded below. Any
update of the raw slopes (an optax step, ``eqx.tree_at``, a random perturbation) leaves a
valid spline. The map is piecewise linear: its derivative is that of the clip (1 on the closed
interval ``[lower, upper]``, so slopes initialised on a bound still train; 0 outside) composed
with the held knots. A raw slope pushed past a bound stays there until
:meth:`LinearSpline.project` (a projected-gradient step) brings it back onto the bound.

References: A. Goujon, S. Neumayer, P. Bohra, S. Ducotterd & M. Unser, "A neural-network-based
convex regularizer for inverse problems", IEEE Trans. Comput. Imaging 9, 2023 (linear-spline
activations with slopes in [0, 1]); A. Goujon, S. Neumayer & M. Unser, "Learning weakly convex
regularizers for convergent image-reconstruction algorithms", SIAM J. Imaging Sci. 17, 2024
(weakly convex potentials).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def _clip_inclusive(x, lower, upper):
    """``clip(x, lower, upper)`` whose derivative is 1 on the closed interval (``jnp.clip``
    has derivative 0 at the bounds, which would freeze a slope initialised on a bound)."""
    return jnp.where(x < lower, lower, jnp.where(x > upper, upper, x)).astype(x.dtype)


def _held_at_zero(steps):
    """``v_0 = 0, v_{j+1} = max(0, v_j + steps_j)`` along the last axis (Lindley's recursion),
    in closed form ``v_j = S_j - min_{k <= j} S_k`` with ``S`` the partial sums from 0."""
    partial = jnp.concatenate([jnp.zeros_like(steps[..., :1]), jnp.cumsum(steps, axis=-1)], axis=-1)
    return partial - jax.lax.cummin(partial, axis=partial.ndim - 1)


class LinearSpline(eqx.Module):
    r"""``C`` learnable linear splines ``sigma_c`` with slopes in ``[lower, upper]``,
    ``sigma_c(0) = 0`` and ``t sigma_c(t) >= 0``, plus their potentials
    ``psi_c = \int_0^t sigma_c >= 0`` (module docstring).

    Arguments:
        channels: ``C``, the number of splines (int >= 1).
        knots: ``m``, the number of uniform knots on ``[-spline_range, spline_range]``, odd
            (0 is a knot) and >= 3 (default 21).
        spline_range: ``r > 0``, half-width of the knot grid (default 0.1).
        lower, upper: the slope bounds, ``lower < upper`` and ``upper > 0`` (default ``0`` and
            ``1``: convex potentials with ``psi_c'' <= 1``).
        init_slope: the initial value of every slope (default 1: ``sigma_c(t) = t``); must
            lie in ``[lower, upper]``.

    Shapes: the raw slopes have shape ``(C, m - 1)``; :meth:`__call__` and :meth:`potential`
    take an array of shape ``(C, ...)`` and apply spline ``c`` to entry ``c`` (same shape and
    dtype out; the parameters are cast to the input's precision).

    Raises:
        ValueError: a bad ``channels``, ``knots``, ``spline_range``, slope bounds or
            ``init_slope`` (named, with the received value).

    Example:
        >>> sp = ij.learned.LinearSpline(1, knots=5, spline_range=1.0)  # knots -1, -0.5, ..., 1
        >>> t = jnp.array([[-2.0, -0.75, 0.75, 3.0]])                  # (C, ...) = (1, 4)
        >>> sp(t).tolist()  # slopes 1 at initialisation: sigma(t) = t
        [[-2.0, -0.75, 0.75, 3.0]]

        Raw slopes are clipped into ``[lower, upper] = [0, 1]`` at every call; these make a ReLU,
        whose potential is ``max(t, 0)^2 / 2``:

        >>> relu = eqx.tree_at(lambda s: s.raw_slopes, sp, jnp.array([[-1.0, 0.0, 1.0, 2.0]]))
        >>> relu(t).tolist(), relu.potential(t).tolist()
        ([[0.0, 0.0, 0.75, 3.0]], [[0.0, 0.0, 0.28125, 4.5]])
    """

    raw_slopes: jax.Array
    knots: int = eqx.field(static=True)
    spline_range: float = eqx.field(static=True)
    lower: float = eqx.field(static=True)
    upper: float = eqx.field(static=True)

    def __init__(self, channels: int, knots: int = 21, spline_range: float = 0.1, lower: float = 0.0,
                 upper: float = 1.0, init_slope: float = 1.0):
        who = "LinearSpline"
        if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
            raise ValueError(f"{who}: `channels` must be an int >= 1, got {channels!r}")
        _check_grid(knots, spline_range, who)
        if not (np.isfinite(lower) and np.isfinite(upper) and lower < upper and upper > 0):
            raise ValueError(
                f"{who}: the slope bounds must be finite with `lower` < `upper` and `upper` > 0, got "
                f"lower={lower!r}, upper={upper!r}"
            )
        if not lower <= init_slope <= upper:
            raise ValueError(f"{who}: `init_slope` must lie in [lower, upper] = [{lower}, {upper}], got {init_slope!r}")
        self.knots = int(knots)
        self.spline_range = float(spline_range)
        self.lower = float(lower)
        self.upper = float(upper)
        self.raw_slopes = jnp.full((int(channels), self.knots - 1), init_slope, jnp.float32)

    def __check_init__(self):
        _check_grid(self.knots, self.spline_range, "LinearSpline")
        shape = getattr(self.raw_slopes, "shape", None)
        if shape is None or len(shape) != 2 or shape[1] != self.knots - 1:
            raise ValueError(
                f"LinearSpline: `raw_slopes` must have shape (channels, knots - 1) = (C, {self.knots - 1}), got {shape}"
            )

    # ---- the grid ------------------------------------------------------------------------------
    @property
    def channels(self) -> int:
        return self.raw_slopes.shape[0]

    @property
    def spacing(self) -> float:
        r"""``Delta = 2 r / (m - 1)``."""
        return 2 * self.spline_range / (self.knots - 1)

    def grid(self, dtype=jnp.float32) -> jax.Array:
        """The knots ``t_j``, shape ``(m,)``."""
        return (-self.spline_range + self.spacing * jnp.arange(self.knots)).astype(dtype)

    # ---- the constrained parameters -------------------------------------------------------------
    def clipped_slopes(self, dtype=None) -> jax.Array:
        """Step 1 of the parametrisation: the raw slopes clipped to ``[lower, upper]``, shape
        ``(C, m - 1)``, cast to ``dtype`` (default: the stored precision)."""
        raw = self.raw_slopes if dtype is None else self.raw_slopes.astype(dtype)
        return _clip_inclusive(raw, self.lower, self.upper)

    def slopes(self, dtype=None) -> jax.Array:
        """The slopes of ``sigma_c``: ``(C, m + 1)``, the ``m - 1`` intervals between the knots
        framed by the slopes below ``-r`` and above ``r``."""
        return self._tables(self.raw_slopes.dtype if dtype is None else dtype)[0]

    def knot_values(self, dtype=None) -> jax.Array:
        """``sigma_c(t_j)``, shape ``(C, m)``."""
        return self._tables(self.raw_slopes.dtype if dtype is None else dtype)[1][:, 1:]

    def project(self) -> "LinearSpline":
        """The same spline with its raw slopes clipped into ``[lower, upper]`` (the projection
        step of projected-gradient training; the function itself is unchanged)."""
        return eqx.tree_at(lambda s: s.raw_slopes, self, self.clipped_slopes())

    def _tables(self, dtype):
        """``(s, c, I)`` per extended interval ``e = 0, ..., m`` (``e = 0``: ``t < t_0``;
        ``e = m``: ``t >= t_{m-1}``; else ``[t_{e-1}, t_e)``), each ``(C, m + 1)``: the slope, and
        the value of ``sigma`` and of ``psi`` at the interval's anchor knot ``t_{a(e)}``,
        ``a(e) = clip(e - 1, 0, m - 1)``."""
        s = self.clipped_slopes(dtype)
        d = jnp.asarray(self.spacing, dtype)
        h = (self.knots - 1) // 2  # t_h = 0
        if self.lower >= 0:  # non-decreasing: nothing is held at zero
            c = jnp.concatenate([jnp.zeros_like(s[:, :1]), jnp.cumsum(s * d, axis=1)], axis=1)
            c = c - c[:, h : h + 1]
        else:
            right = _held_at_zero(s[:, h:] * d)  # sigma(t_h), ..., sigma(t_{m-1})
            left = -_held_at_zero(s[:, :h][:, ::-1] * d)[:, ::-1]  # sigma(t_0), ..., sigma(t_h)
            c = jnp.concatenate([left[:, :-1], right], axis=1)
        inner = jnp.clip((c[:, 1:] - c[:, :-1]) / d, self.lower, self.upper)  # (clip: rounding only)
        outer_left = jnp.maximum(inner[:, :1], 0)
        outer_right = jnp.maximum(inner[:, -1:], 0)
        slopes = jnp.concatenate([outer_left, inner, outer_right], axis=1)
        integ = jnp.concatenate([jnp.zeros_like(c[:, :1]), jnp.cumsum(d * (c[:, :-1] + c[:, 1:]) / 2, axis=1)], axis=1)
        integ = integ - integ[:, h : h + 1]
        anchored = lambda a: jnp.concatenate([a[:, :1], a], axis=1)  # noqa: E731  (e = 0 anchors at t_0)
        return slopes, anchored(c), anchored(integ)

    def _locate(self, t):
        """Extended interval ``e`` and offset ``u = t - t_{a(e)}`` for ``t`` of shape ``(C, P)``."""
        dtype = t.dtype
        r = jnp.asarray(self.spline_range, dtype)
        d = jnp.asarray(self.spacing, dtype)
        e = jnp.clip(jnp.floor((t + r) / d) + 1, 0, self.knots).astype(jnp.int32)
        anchor = jnp.clip(e - 1, 0, self.knots - 1)
        u = t - (-r + d * anchor.astype(dtype))
        return e, u

    def _flat(self, t, who):
        t = jnp.asarray(t)
        if not jnp.issubdtype(t.dtype, jnp.floating):
            raise TypeError(f"{who}: the input must be a real floating array, got dtype {t.dtype}")
        if t.ndim < 1 or t.shape[0] != self.channels:
            raise ValueError(f"{who}: the input must have shape (C, ...) with C = {self.channels}, got {t.shape}")
        return t.reshape(t.shape[0], -1)

    # ---- evaluation -----------------------------------------------------------------------------
    def __call__(self, t: jax.Array) -> jax.Array:
        r"""``sigma_c(t_c)`` for ``t`` of shape ``(C, ...)``."""
        flat = self._flat(t, "LinearSpline")
        return _jit_sigma(self, flat).reshape(jnp.shape(t))

    def potential(self, t: jax.Array) -> jax.Array:
        r"""``psi_c(t_c) = \int_0^{t_c} sigma_c`` for ``t`` of shape ``(C, ...)``: on an
        interval anchored at ``t_a``, ``psi(t_a) + sigma(t_a) u + s u^2 / 2`` with ``u = t - t_a``."""
        flat = self._flat(t, "LinearSpline.potential")
        return _jit_potential(self, flat).reshape(jnp.shape(t))

    def _sigma(self, flat, tables=None):
        s, c, _ = self._tables(flat.dtype) if tables is None else tables
        e, u = self._locate(flat)
        return jnp.take_along_axis(c, e, axis=1) + jnp.take_along_axis(s, e, axis=1) * u

    def _potential(self, flat):
        s, c, integ = self._tables(flat.dtype)
        e, u = self._locate(flat)
        take = lambda a: jnp.take_along_axis(a, e, axis=1)  # noqa: E731
        return take(integ) + take(c) * u + take(s) * (u * u) / 2

    def slope_range(self, dtype=None) -> tuple[jax.Array, jax.Array]:
        """Per spline ``(min, max)`` of ``sigma_c'`` on the whole real line, each ``(C,)``."""
        s = self.slopes(dtype)
        return jnp.min(s, axis=1), jnp.max(s, axis=1)


# one compiled program per call (also when called eagerly); inlined under an outer jit
@eqx.filter_jit
def _jit_sigma(spline, flat):
    return spline._sigma(flat)


@eqx.filter_jit
def _jit_potential(spline, flat):
    return spline._potential(flat)


def _check_grid(knots, spline_range, who):
    if isinstance(knots, bool) or not isinstance(knots, (int, np.integer)) or knots < 3 or knots % 2 == 0:
        raise ValueError(f"{who}: `knots` must be an odd int >= 3 (0 is the middle knot), got {knots!r}")
    if isinstance(spline_range, bool) or not isinstance(spline_range, (int, float, np.floating, np.integer)) or not (
        np.isfinite(spline_range) and spline_range > 0
    ):
        raise ValueError(f"{who}: `spline_range` must be a finite number > 0, got {spline_range!r}")
