"""Argument validators shared by the library: one place for the checks every constructor makes.

Each raises a clear error naming the caller (``who``), the argument, what it expects and what it
got, and returns the value in its canonical Python type (so that it can be a static field).

Example:
    >>> from invjax._misc import positive_int, real_in
    >>> positive_int(3, "depth", "DnCNN", minimum=2)
    3
    >>> real_in(0.5, "relaxation", "DEQ", 0, 1)
    0.5
    >>> positive_int(1.5, "depth", "DnCNN")
    Traceback (most recent call last):
    ...
    ValueError: DnCNN: `depth` must be an int >= 1, got 1.5
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["positive_int", "positive_float", "real_in", "shape2"]


def positive_int(value, name: str, who: str, minimum: int = 1) -> int:
    """``value`` as a Python ``int`` if it is an integer (not a bool) ``>= minimum``.

    Arguments:
        value: the argument to check.
        name: its name, as the caller's signature spells it.
        who: the caller (class or function name) the error message starts with.
        minimum: the smallest accepted value (default 1).

    Returns:
        ``int(value)``.

    Raises:
        ValueError: ``value`` is not an integer ``>= minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{who}: `{name}` must be an int >= {minimum}, got {value!r}")
    return int(value)


def real_in(value, name: str, who: str, low: float, high: float, *, low_open: bool = True,
            high_open: bool = False) -> float:
    """``value`` as a Python ``float`` if it is finite and lies in the interval from ``low`` to
    ``high`` (open or closed at each end; default ``(low, high]``).

    Arguments:
        value: the argument to check.
        name: its name.
        who: the caller the error message starts with.
        low, high: the interval's ends (``math.inf`` for none).
        low_open, high_open: whether each end is excluded.

    Returns:
        ``float(value)``.

    Raises:
        TypeError: ``value`` is not a real number.
        ValueError: it is not finite or lies outside the interval.
    """
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{who}: `{name}` must be a float, got {value!r}") from err
    ok = math.isfinite(number) and (number > low if low_open else number >= low) and (
        number < high if high_open else number <= high)
    if not ok:
        interval = ("(" if low_open else "[") + f"{low}, {high}" + (")" if high_open else "]")
        raise ValueError(f"{who}: `{name}` must lie in {interval}, got {value!r}")
    return number


def positive_float(value, name: str, who: str) -> float:
    """``value`` as a Python ``float`` if it is finite and ``> 0`` (see :func:`real_in`)."""
    return real_in(value, name, who, 0, math.inf, high_open=True)


def shape2(shape, name: str, who: str) -> tuple[int, int]:
    """``shape`` as a pair of positive Python ints ``(H, W)`` (an image shape).

    Raises:
        ValueError: ``shape`` is not two integers ``>= 1``.
    """
    try:
        dims = tuple(shape)
    except TypeError:
        dims = None
    if dims is None or len(dims) != 2 or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1
                                             for d in dims):
        raise ValueError(f"{who}: `{name}` must be two ints >= 1 (H, W), got {shape!r}")
    return int(dims[0]), int(dims[1])
