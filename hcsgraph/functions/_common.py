"""Helpers shared by the built-in functions: stack checks, per-slice loops, footprints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def check_stack(stack: Any, name: str) -> None:
    """Raise ``ValueError`` naming the function unless ``stack`` is a ``[Z, Y, X]`` array."""
    shape = tuple(getattr(stack, "shape", ()))
    if len(shape) != 3:
        raise ValueError(f"{name}: expected a [Z, Y, X] stack, got an array of shape {shape}")


def per_slice(func: Callable[[np.ndarray], np.ndarray], stack: np.ndarray, name: str) -> np.ndarray:
    """Apply a 2-D numpy function to every Z slice and stack the results."""
    check_stack(stack, name)
    stack = np.asarray(stack)
    if stack.shape[0] == 0:
        return stack.copy()
    return np.stack([func(plane) for plane in stack])


def sigma_pair(sigma: float | tuple[float, float], name: str) -> tuple[float, float]:
    """``sigma`` as (sigma_y, sigma_x); both must be >= 0."""
    pair = (sigma, sigma) if np.isscalar(sigma) else tuple(sigma)
    if len(pair) != 2 or any(float(s) < 0 for s in pair):
        raise ValueError(f"{name}: sigma={sigma!r} must be a number >= 0 or a (sigma_y, sigma_x) pair")
    return float(pair[0]), float(pair[1])


def positive_int(value: Any, field: str, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` or a ``ValueError`` naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}: {field}={value!r} must be an integer >= {minimum}")
    return int(value)


def make_footprint(radius: int, shape: str, name: str) -> np.ndarray:
    """A flat 2-D footprint: ``"disk"`` (scikit-image's disk) or ``"square"`` of side 2*radius+1."""
    from skimage.morphology import disk

    radius = positive_int(radius, "radius", name, minimum=0)
    if shape == "disk":
        return disk(radius).astype(bool)
    if shape == "square":
        return np.ones((2 * radius + 1, 2 * radius + 1), dtype=bool)
    raise ValueError(f"{name}: shape={shape!r} must be 'disk' or 'square'")


def check_footprint(footprint: Any, name: str) -> np.ndarray:
    """A user footprint as a 2-D bool array with odd sides (so that it has a centre)."""
    fp = np.asarray(footprint).astype(bool)
    if fp.ndim != 2 or fp.shape[0] % 2 == 0 or fp.shape[1] % 2 == 0 or not fp.any():
        raise ValueError(
            f"{name}: footprint of shape {fp.shape} must be a non-empty 2-D array with odd sides"
        )
    return fp


def footprint_offsets(footprint: np.ndarray) -> list[tuple[int, int, int]]:
    """The footprint as horizontal runs ``(dy, dx_first, dx_last)`` relative to its centre."""
    fp = np.asarray(footprint, dtype=bool)
    cy, cx = fp.shape[0] // 2, fp.shape[1] // 2
    runs = []
    for row in range(fp.shape[0]):
        cols = np.flatnonzero(fp[row])
        if cols.size == 0:
            continue
        breaks = np.flatnonzero(np.diff(cols) > 1)
        starts = np.concatenate(([cols[0]], cols[breaks + 1]))
        ends = np.concatenate((cols[breaks], [cols[-1]]))
        runs.extend((row - cy, int(s) - cx, int(e) - cx) for s, e in zip(starts, ends, strict=True))
    return runs


def not_splittable(func: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a function whose result needs the whole Z stack (it cannot be split along Z on OOM)."""
    func.oom_splittable = False  # type: ignore[attr-defined]
    return func
