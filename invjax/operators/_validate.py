"""Argument checks shared by the operator constructors (trace-time where possible)."""

import numpy as np

from .base import concrete_or_none


def as_shape(shape, name: str, who: str, ndim: int | None = None) -> tuple[int, ...]:
    """Validate a shape argument: a tuple of positive Python ints (of length ``ndim``)."""
    try:
        out = tuple(int(s) for s in shape)
    except TypeError as err:
        raise TypeError(f"{who}: `{name}` must be a tuple of ints, got {shape!r}") from err
    if any(float(s) != int(s) for s in shape):
        raise TypeError(f"{who}: `{name}` must contain integers, got {tuple(shape)}")
    if ndim is not None and len(out) != ndim:
        raise ValueError(f"{who}: `{name}` must have {ndim} entries, got {out}")
    if any(s < 1 for s in out):
        raise ValueError(f"{who}: `{name}` entries must be >= 1, got {out}")
    return out


def check_finite(arr, name: str, who: str) -> None:
    """Raise if a concrete array has NaN or inf entries (traced arrays are skipped)."""
    value = concrete_or_none(arr)
    if value is not None and not np.all(np.isfinite(value)):
        raise ValueError(f"{who}: `{name}` must be finite, got {int(np.size(value) - np.isfinite(value).sum())} non-finite entries")
