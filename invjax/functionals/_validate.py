"""Argument checks and numerically safe helpers shared by the functionals.

Checks run at trace time where a value is concrete (a Python number, a numpy array, an
un-traced JAX array) and are skipped for traced values, so that every functional can be built
and applied inside ``jax.jit``, ``jax.vmap`` and ``jax.grad``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..operators.base import concrete_or_none, default_float


def is_complex(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.complexfloating)


def real_dtype(dtype):
    """The real dtype of the same precision (``complex64 -> float32``)."""
    return jnp.finfo(dtype).dtype


def as_input(x, who: str, name: str = "x", real: bool = False) -> jax.Array:
    """An input array: integers/bools become the default float; complex refused if ``real``."""
    x = jnp.asarray(x)
    if is_complex(x.dtype):
        if real:
            raise TypeError(f"{who}: argument `{name}` must be real, got dtype {x.dtype.name}")
    elif not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(default_float())
    return x


def as_param(
    value,
    name: str,
    who: str,
    *,
    nonneg: bool = False,
    positive: bool = False,
    allow_inf: bool = False,
    allow_complex: bool = False,
) -> jax.Array:
    """A parameter stored as an array leaf; concrete values are checked here.

    Raises:
        TypeError: complex value where a real one is required, or not array-like.
        ValueError: NaN (or inf unless ``allow_inf``), negative (``nonneg``) or non-positive
            (``positive``) entries.
    """
    try:
        arr = jnp.asarray(value)
    except TypeError as err:
        raise TypeError(f"{who}: `{name}` must be array-like, got {value!r}") from err
    if is_complex(arr.dtype):
        if not allow_complex:
            raise TypeError(f"{who}: `{name}` must be real, got dtype {arr.dtype.name}")
    elif not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(default_float())
    conc = concrete_or_none(arr)
    if conc is not None:
        bad = np.isnan(conc) if allow_inf else ~np.isfinite(conc)
        if np.any(bad):
            what = "must not contain NaN" if allow_inf else "must be finite"
            raise ValueError(f"{who}: `{name}` {what}, got {_show(conc)}")
        if nonneg and np.any(np.real(conc) < 0):
            raise ValueError(f"{who}: `{name}` must be >= 0, got {_show(conc)}")
        if positive and np.any(np.real(conc) <= 0):
            raise ValueError(f"{who}: `{name}` must be > 0, got {_show(conc)}")
    return arr


def _show(a: np.ndarray) -> str:
    if a.ndim == 0:
        return repr(a.item())
    return f"an array of shape {a.shape} with min {np.nanmin(np.real(a)) if a.size else 'n/a'}"


def check_step(step, x: jax.Array, who: str, strict: bool = False) -> jax.Array:
    """A scalar step ``>= 0`` (``> 0`` if ``strict``), cast to the real precision of ``x``."""
    s = jnp.asarray(step)
    if s.ndim != 0:
        raise ValueError(f"{who}: `step` must be a scalar, got shape {s.shape}")
    if is_complex(s.dtype):
        raise TypeError(f"{who}: `step` must be real, got dtype {s.dtype.name}")
    conc = concrete_or_none(s)
    if conc is not None:
        if not np.isfinite(conc) or conc < 0 or (strict and conc == 0):
            bound = "> 0" if strict else ">= 0"
            raise ValueError(f"{who}: `step` must be finite and {bound}, got {conc.item()!r}")
    return s.astype(real_dtype(x.dtype))


def check_broadcast(param: jax.Array | None, x: jax.Array, name: str, who: str) -> None:
    """``param`` must broadcast to ``x.shape`` without changing it."""
    if param is None:
        return
    try:
        out = jnp.broadcast_shapes(param.shape, x.shape)
    except ValueError:
        out = None
    if out != x.shape:
        raise ValueError(
            f"{who}: `{name}` of shape {param.shape} does not broadcast to the input shape {x.shape}"
        )


def cast_like(param: jax.Array, x: jax.Array) -> jax.Array:
    """Cast a parameter to the precision of ``x`` (complex parameters stay complex)."""
    if is_complex(param.dtype):
        return param.astype(jnp.result_type(x.dtype, jnp.complex64) if not is_complex(x.dtype) else x.dtype)
    return param.astype(real_dtype(x.dtype))


def abs2(x: jax.Array) -> jax.Array:
    """``|x|^2`` (real), without a square root."""
    if is_complex(x.dtype):
        return jnp.real(x) ** 2 + jnp.imag(x) ** 2
    return x * x


def safe_sqrt(s: jax.Array) -> jax.Array:
    """``sqrt(s)`` for ``s >= 0`` whose derivative at ``s = 0`` is 0 instead of inf/NaN."""
    pos = s > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, s, 1)), 0)


def safe_abs(x: jax.Array) -> jax.Array:
    """``|x|`` with a finite derivative at 0 (complex-safe)."""
    if is_complex(x.dtype):
        return safe_sqrt(abs2(x))
    return jnp.abs(x)


def group_norm(x: jax.Array, axis: int, keepdims: bool = False) -> jax.Array:
    """Euclidean norm over ``axis`` with a finite derivative at 0 (complex-safe)."""
    n = x.shape[axis]
    if 0 < n <= _UNROLL_SUM:
        # XLA on CPU reduces a short axis (the 2 or 3 gradient directions) ~30x slower than
        # an explicit sum of slices, so sum the slices.
        parts = [abs2(jax.lax.index_in_dim(x, k, axis, keepdims=keepdims)) for k in range(n)]
        s = parts[0]
        for p in parts[1:]:
            s = s + p
    else:
        s = jnp.sum(abs2(x), axis=axis, keepdims=keepdims)
    return safe_sqrt(s)


_UNROLL_SUM = 8


def shrink(x: jax.Array, norm: jax.Array, t: jax.Array) -> jax.Array:
    """``x * max(1 - t / norm, 0)``: soft-thresholding of the modulus/group norm, safe at 0."""
    return x * (jnp.maximum(norm - t, 0) / jnp.where(norm > 0, norm, 1))
