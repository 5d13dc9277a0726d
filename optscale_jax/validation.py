"""Checks of user input at the Python boundary, with errors that name the argument.

Every public entry point of the core calls these once, before anything is traced.
Values that are being traced (a caller's own `jax.jit`) cannot be inspected and are
passed through unchecked: inside jit, batched numerics report status fields instead.

The element checks (`check_open_unit`, `check_unit`, `check_finite`, `check_positive`)
share one contract: they take a scalar or array `x` and the argument's `name`, return `x`
unchanged, and raise ValueError naming `name` and quoting the offending values.

Example:
    >>> from optscale_jax.validation import check_open_unit
    >>> check_open_unit(1.5, "alpha")
    Traceback (most recent call last):
        ...
    ValueError: alpha must lie in (0, 1), got 1.5
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.typing import ArrayLike

__all__ = [
    "check_scores",
    "check_open_unit",
    "check_unit",
    "check_max_n",
    "check_broadcast",
    "check_finite",
    "check_positive",
    "check_stats",
    "is_traced",
]


def is_traced(*values: Any) -> bool:
    """True if any value is a jax tracer (its contents are unknown until run time)."""
    return any(isinstance(v, jax.core.Tracer) for v in values)


def _describe(values: np.ndarray) -> str:
    """A short quote of the offending values for an error message."""
    flat = values.ravel()
    shown = ", ".join(f"{v:g}" for v in flat[:3])
    return shown + (", ..." if flat.size > 3 else "")


def _numeric(x: ArrayLike, name: str) -> np.ndarray:
    try:
        array = np.asarray(x)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numeric: {error}") from None
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
    ):
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
    return array


def _first_index(bad: np.ndarray) -> str:
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    return "" if not index else f" at index {index if len(index) > 1 else index[0]}"


def check_scores(
    scores: ArrayLike, mask: ArrayLike | None = None, name: str = "scores"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores must be finite and in [0, 1] wherever `mask` is True.

    Args:
        scores: `[..., k]` array of scores (at least one dimension).
        mask: optional bool array of the same shape, True where a score exists.
        name: the argument's name for error messages.

    Returns:
        (scores, mask) as numpy arrays (float scores keep their dtype; others become
        float64), or unchanged if traced.

    Raises:
        ValueError: naming `name` (or `mask`) and the first offending entry.
    """
    if is_traced(scores, mask):
        return scores, mask
    array = _numeric(scores, name)
    if array.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (samples on the last axis)")
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    checked = None
    if mask is not None:
        checked = np.asarray(mask)
        if checked.dtype != np.bool_:
            if not np.issubdtype(checked.dtype, np.number) or not np.isin(checked, (0, 1)).all():
                raise ValueError(f"mask must be boolean, got dtype {checked.dtype}")
            checked = checked.astype(bool)
        if checked.shape != array.shape:
            raise ValueError(
                f"mask has shape {checked.shape} but {name} has shape {array.shape}; they must match"
            )
    # Fast path, two reductions without temporaries: NaN makes min / max NaN and fail, and
    # scores valid everywhere are valid under any mask. Only failures are located below.
    if array.size == 0 or (array.min() >= 0.0 and array.max() <= 1.0):
        return array, checked
    present = np.ones(array.shape, bool) if checked is None else checked
    bad = present & ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"{name} contains NaN or infinity{_first_index(bad)}")
    bad = present & ((array < 0.0) | (array > 1.0))
    if bad.any():
        raise ValueError(
            f"{name} must lie in [0, 1]; found {_describe(array[bad])}{_first_index(bad)}"
        )
    return array, checked


def _check_interval(x: ArrayLike, name: str, closed: bool) -> ArrayLike:
    if is_traced(x):
        return x
    array = _numeric(x, name).astype(np.float64)
    if closed:
        bad = ~((array >= 0.0) & (array <= 1.0))
        interval = "[0, 1]"
    else:
        bad = ~((array > 0.0) & (array < 1.0))
        interval = "(0, 1)"
    if bad.any():
        raise ValueError(f"{name} must lie in {interval}, got {_describe(array[bad])}")
    return x


def check_open_unit(x: ArrayLike, name: str) -> ArrayLike:
    """x must lie in (0, 1) everywhere (e.g. alpha; see the module docstring)."""
    return _check_interval(x, name, closed=False)


def check_unit(x: ArrayLike, name: str) -> ArrayLike:
    """x must lie in [0, 1] everywhere (e.g. s_min; see the module docstring)."""
    return _check_interval(x, name, closed=True)


def check_max_n(max_n: ArrayLike | None, name: str = "max_n") -> ArrayLike | None:
    """max_n must be None or integers >= 1.

    Args:
        max_n: None (no cap), an int, or an integer array.
        name: the argument's name.

    Returns:
        max_n, unchanged.

    Raises:
        ValueError: naming `name`.
    """
    if max_n is None or is_traced(max_n):
        return max_n
    if isinstance(max_n, bool):
        raise ValueError(f"{name} must be an integer >= 1, got {max_n!r}")
    array = _numeric(max_n, name)
    if (
        array.dtype == np.bool_
        or not np.all(np.isfinite(array))
        or np.any(array != np.round(array))
    ):
        raise ValueError(f"{name} must be an integer >= 1, got {max_n!r}")
    if np.any(array < 1):
        raise ValueError(f"{name} must be >= 1, got {_describe(array[array < 1])}")
    if np.any(array > np.iinfo(np.int32).max):
        raise ValueError(f"{name} must fit in int32, got {_describe(array[array > 2**31 - 1])}")
    return max_n


def check_broadcast(name_to_array: Mapping[str, ArrayLike]) -> tuple[int, ...]:
    """The arrays must broadcast together.

    Args:
        name_to_array: argument name -> array.

    Returns:
        The broadcast shape.

    Raises:
        ValueError: naming the arguments whose shapes clash.
    """
    shapes = {name: np.shape(value) for name, value in name_to_array.items()}
    shape: tuple[int, ...] = ()
    seen: list[str] = []
    for name, this in shapes.items():
        try:
            shape = np.broadcast_shapes(shape, this)
        except ValueError:
            others = ", ".join(f"{n} {shapes[n]}" for n in seen)
            raise ValueError(
                f"{name} has shape {this}, which does not broadcast with {others}"
            ) from None
        seen.append(name)
    return shape


def check_finite(x: ArrayLike, name: str) -> ArrayLike:
    """x must be numeric and finite everywhere (see the module docstring)."""
    if not is_traced(x):
        _finite(x, name)
    return x


def _finite(x: ArrayLike, name: str) -> np.ndarray:
    """x as a numeric array, checked finite."""
    array = _numeric(x, name)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinity{_first_index(~np.isfinite(array))}")
    return array


def check_positive(x: ArrayLike, name: str) -> ArrayLike:
    """x must be finite and > 0 everywhere (see the module docstring)."""
    if is_traced(x):
        return x
    array = _finite(x, name)
    if np.any(array <= 0):
        raise ValueError(f"{name} must be > 0, got {_describe(array[array <= 0])}")
    return x


def check_stats(n: ArrayLike, s1: ArrayLike, s2: ArrayLike) -> tuple[int, ...]:
    """Sufficient statistics: finite, n >= 0, and the three broadcast together.

    Args:
        n: sample counts.
        s1: sums of scores.
        s2: sums of squared scores.

    Returns:
        The broadcast shape.

    Raises:
        ValueError: naming the offending argument.
    """
    shape = check_broadcast({"n": n, "s1": s1, "s2": s2})
    if is_traced(n, s1, s2):
        return shape
    for value, name in ((n, "n"), (s1, "s1"), (s2, "s2")):
        check_finite(value, name)
    counts = _numeric(n, "n")
    if np.any(counts < 0):
        raise ValueError(f"n must be >= 0, got {_describe(counts[counts < 0])}")
    return shape
