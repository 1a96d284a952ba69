r"""MRI sampling: simulated receive-coil maps and variable-density Cartesian undersampling masks.

The two ingredients of a :class:`~invjax.operators.CartesianMRI` besides the image:

* :func:`coil_sensitivities`: smooth simulated receive-coil maps with ``sum_c |S_c|^2 = 1``;
* :func:`variable_density_mask`: 1-D variable-density Cartesian undersampling (whole
  phase-encode lines, a fully sampled centre).

Both are pure functions of their arguments (and of an explicit ``jax.random`` key): nothing is
downloaded. ``ij.learned`` re-exports them (its MRI training data, :func:`~invjax.learned.brain_slices`,
pairs with them).

Example:
    >>> mask = ij.operators.variable_density_mask(32, 4, key=jax.random.key(0))
    >>> A = ij.operators.CartesianMRI(mask, sensitivities=ij.operators.coil_sensitivities(32, 4))
    >>> A.out_shape
    (4, 32, 32)
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from .._misc import positive_int
from .base import default_complex, default_float

__all__ = ["coil_sensitivities", "variable_density_mask"]


def _real_dtype(dtype, who: str):
    dtype = jnp.dtype(default_float() if dtype is None else dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{who}: `dtype` must be a real floating dtype, got {dtype.name}")
    return dtype


# ---- coil sensitivities --------------------------------------------------------------------------
def coil_sensitivities(
    n: int,
    coils: int = 8,
    *,
    key=None,
    radius: float = 1.2,
    width: float = 0.8,
    phase: float = 1.0,
    dtype=None,
) -> jax.Array:
    r"""Smooth simulated receive-coil sensitivity maps, normalised to ``sum_c |S_c|^2 = 1``.

    Coil ``c`` sits at angle ``theta_c = 2 pi c / C`` (plus a random jitter with ``key``) on a
    circle of ``radius`` around the image centre, in coordinates where the image spans
    ``[-1, 1]^2``. Its raw map is a Gaussian bump with a smooth phase,

    .. math:: s_c(r) = \exp\!\Big(-\frac{\|r - p_c\|^2}{2 w^2}\Big)\,
              \exp\!\big(i\,(\phi_c + \pi\,\mathrm{phase}\; \langle r, u_c \rangle)\big),
              \qquad p_c = \mathrm{radius}\,(\cos\theta_c, \sin\theta_c),

    with ``u_c`` the unit vector rotated a quarter turn from ``p_c`` and ``phi_c`` a phase offset
    (``2 pi c / C``, or uniform random with ``key``). The maps are then divided by the root
    sum of squares, ``S_c = s_c / (sum_k |s_k|^2)^{1/2}``, so that ``sum_c |S_c|^2 = 1`` at every
    pixel: the multi-coil :class:`~invjax.operators.CartesianMRI` then has norm 1 and ``A^H A``
    is the identity under full sampling (the "SENSE-normalised" convention). One coil gives a
    pure smooth phase map ``|S_1| = 1``.

    Arguments:
        n: image side (int >= 2).
        coils: number of coils ``C`` (int >= 1, default 8).
        key: optional ``jax.random`` key: jitter the coil angles (up to a quarter of their
            spacing), widths (+-20 %) and phase offsets. ``None``: the deterministic layout.
        radius: distance of the coils from the centre (default 1.2: just outside the image).
        width: Gaussian width ``w`` (default 0.8; larger is smoother and less distinct).
        phase: strength of the phase ramp across the image, in half turns (default 1.0).
        dtype: complex dtype (default complex64, complex128 under ``jax_enable_x64``).

    Returns:
        Complex array ``(C, n, n)``.

    Raises:
        ValueError: ``n < 2``, ``coils < 1``, a non-positive ``radius``/``width`` or a
            non-finite ``phase``.
        TypeError: a real ``dtype``.

    Example:
        >>> S = ij.operators.coil_sensitivities(32, 8)
        >>> S.shape, bool(jnp.allclose(jnp.sum(jnp.abs(S) ** 2, axis=0), 1, atol=1e-5))
        ((8, 32, 32), True)
    """
    who = "coil_sensitivities"
    n = positive_int(n, "n", who, 2)
    coils = positive_int(coils, "coils", who)
    for name, v in (("radius", radius), ("width", width)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{who}: `{name}` must be a finite float > 0, got {v!r}")
    if not (isinstance(phase, (int, float)) and math.isfinite(phase)):
        raise ValueError(f"{who}: `phase` must be a finite float, got {phase!r}")
    dtype = jnp.dtype(default_complex() if dtype is None else dtype)
    if not jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"{who}: `dtype` must be complex, got {dtype.name}")
    return _coil_maps(n, coils, key, float(radius), float(width), float(phase), dtype)


@functools.partial(jax.jit, static_argnums=(0, 1, 3, 4, 5, 6))
def _coil_maps(n, coils, key, radius, width, phase, dtype):
    real = jnp.finfo(dtype).dtype
    c = jnp.arange(coils, dtype=real)
    theta = 2 * jnp.pi * c / coils
    offset = 2 * jnp.pi * c / coils
    widths = jnp.full((coils,), width, real)
    if key is not None:
        k1, k2, k3 = jax.random.split(key, 3)
        theta = theta + (jnp.pi / (2 * coils)) * jax.random.uniform(k1, (coils,), real, -1, 1)
        widths = widths * (1 + 0.2 * jax.random.uniform(k2, (coils,), real, -1, 1))
        offset = jax.random.uniform(k3, (coils,), real, 0, 2 * jnp.pi)
    t = (jnp.arange(n, dtype=real) + 0.5) / n * 2 - 1  # pixel centres in [-1, 1]
    rows, cols = jnp.meshgrid(t, t, indexing="ij")
    px, py = radius * jnp.cos(theta), radius * jnp.sin(theta)
    d2 = (cols[None] - px[:, None, None]) ** 2 + (rows[None] - py[:, None, None]) ** 2
    magnitude = jnp.exp(-d2 / (2 * widths[:, None, None] ** 2))
    ramp = -jnp.sin(theta)[:, None, None] * cols[None] + jnp.cos(theta)[:, None, None] * rows[None]
    angle = offset[:, None, None] + jnp.pi * phase * ramp
    maps = magnitude * jax.lax.complex(jnp.cos(angle), jnp.sin(angle))
    rss = jnp.sqrt(jnp.sum(jnp.abs(maps) ** 2, axis=0))
    return (maps / rss).astype(dtype)


# ---- undersampling masks -------------------------------------------------------------------------
def variable_density_mask(
    n: int,
    acceleration: float = 4,
    *,
    key,
    center_fraction: float = 0.08,
    power: float = 2.0,
    centered: bool = False,
    dtype=None,
) -> jax.Array:
    r"""A random 1-D variable-density Cartesian undersampling mask ``(n, n)``: whole
    phase-encode lines (columns), the centre of k-space fully sampled.

    ``L = round(n / acceleration)`` of the ``n`` columns are sampled: the
    ``round(center_fraction n)`` (at least 1) nearest to the zero frequency, and the rest drawn
    without replacement from the other columns with probability proportional to

    .. math:: p(k) \propto \big(1 - |k| / (n/2 + 1)\big)^{\mathrm{power}},

    ``k`` the signed frequency of the column (a polynomial variable density, as in Lustig,
    Donoho & Pauly, MRM 2007). Every row of k-space (the read-out direction) is sampled in the
    chosen columns, so ``mask.mean() == L / n`` exactly (``1 / acceleration`` when it divides
    ``n``).

    Arguments:
        n: side of k-space (int >= 2).
        acceleration: undersampling factor ``> 1`` (default 4); at most ``n``.
        key: ``jax.random`` key (keyword, required). The mask is a pure function of it, and
            of the other arguments: jittable with ``n`` static, vmappable over keys.
        center_fraction: share of the columns in the fully sampled centre (default 0.08, the
            fastMRI value at 4x); must leave no more than ``L`` columns.
        power: decay of the density away from the centre (default 2; 0 is uniform).
        centered: the k-space convention of the operator: ``False`` (default, as
            :class:`~invjax.operators.CartesianMRI`'s default) puts the zero frequency at index
            0, ``True`` at index ``n // 2``.
        dtype: real float dtype of the 0/1 mask (default float32, float64 under x64).

    Returns:
        ``(n, n)`` array of 0 and 1.

    Raises:
        ValueError: ``acceleration`` outside ``(1, n]``, ``center_fraction`` outside ``[0, 1)``
            or asking for more centre lines than the acceleration allows, a negative ``power``,
            or no ``key``.

    Example:
        >>> m = ij.operators.variable_density_mask(64, 4, key=jax.random.PRNGKey(0))
        >>> float(m.mean())
        0.25
    """
    who = "variable_density_mask"
    n = positive_int(n, "n", who, 2)
    try:
        acceleration = float(acceleration)
    except TypeError as err:
        raise ValueError(f"{who}: `acceleration` must be a float > 1, got {acceleration!r}") from err
    if not (math.isfinite(acceleration) and 1 < acceleration <= n):
        raise ValueError(f"{who}: `acceleration` must be a float in (1, n={n}], got {acceleration!r}")
    if not (isinstance(center_fraction, (int, float)) and 0 <= center_fraction < 1):
        raise ValueError(f"{who}: `center_fraction` must be in [0, 1), got {center_fraction!r}")
    if not (isinstance(power, (int, float)) and math.isfinite(power) and power >= 0):
        raise ValueError(f"{who}: `power` must be a finite float >= 0, got {power!r}")
    if key is None:
        raise ValueError(f"{who}: `key` is required (a jax.random key)")
    dtype = _real_dtype(dtype, who)
    lines = max(1, round(n / acceleration))
    centre = max(1, round(center_fraction * n))
    if centre > lines:
        raise ValueError(
            f"{who}: `center_fraction`={center_fraction} asks for {centre} centre lines, more than the "
            f"{lines} lines of acceleration {acceleration} at n={n}"
        )
    # columns in centred order: signed frequency k = j - n // 2 at index j
    k = np.arange(n) - n // 2
    order = np.argsort(np.abs(k), kind="stable")
    is_centre = np.zeros(n, bool)
    is_centre[order[:centre]] = True
    density = np.where(is_centre, 0.0, (1 - np.abs(k) / (n / 2 + 1)) ** power)
    return _mask(key, tuple(is_centre.tolist()), tuple((density / density.sum()).tolist()), lines - centre,
                 bool(centered), dtype)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _mask(key, is_centre, density, rest, centered, dtype):
    columns = jnp.asarray(is_centre, dtype)
    if rest > 0:
        picked = jax.random.choice(key, len(is_centre), (rest,), replace=False, p=jnp.asarray(density, dtype))
        columns = columns.at[picked].set(1)
    if not centered:
        columns = jnp.fft.ifftshift(columns)
    n = len(is_centre)
    return jnp.broadcast_to(columns[None, :], (n, n))
