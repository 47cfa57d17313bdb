"""Torch building blocks shared by the torch versions of the built-in functions.

Every helper takes a ``[Z, Y, X]`` tensor and works on each Z plane in 2D. Borders follow
scipy.ndimage's ``mode="reflect"`` (the edge pixel is repeated: ``d c b a | a b c d``) for
filters, and ignore out-of-image pixels for morphology (like scikit-image's ``mode="ignore"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hcsgraph.functions._common import footprint_offsets


def torch_module() -> Any:
    """The torch module (imported on first use only)."""
    from hcsgraph.config import MemoryType
    from hcsgraph.memory.libraries import import_library

    return import_library(MemoryType.TORCH)


def compute_dtype(x: Any) -> Any:
    """A float dtype that holds every value of ``x`` exactly (float64 for 32/64-bit data)."""
    torch = torch_module()
    if x.dtype in (torch.float64, torch.int32, torch.int64, torch.uint32, torch.uint64):
        return torch.float64
    return torch.float32


def symmetric_indices(n: int, before: int, after: int) -> np.ndarray:
    """Indices that pad a length-``n`` axis by mirroring with the edge repeated."""
    idx = np.arange(-before, n + after)
    period = 2 * n
    idx = np.mod(idx, period)
    return np.where(idx >= n, period - 1 - idx, idx)


def reflect_pad(x: Any, axis: int, before: int, after: int) -> Any:
    """Pad ``x`` along ``axis`` the way scipy.ndimage's ``mode="reflect"`` does."""
    torch = torch_module()
    if before == 0 and after == 0:
        return x
    idx = torch.as_tensor(symmetric_indices(x.shape[axis], before, after), device=x.device)
    return x.index_select(axis, idx)


def gaussian_kernel(sigma: float, truncate: float) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian weights: radius ``int(truncate * sigma + 0.5)``."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 / float(sigma) ** 2 * x**2)
    return weights / weights.sum()


def correlate_axis(x: Any, weights: np.ndarray, axis: int) -> Any:
    """Correlate the float tensor ``x`` ([Z, Y, X]) with 1-D ``weights`` along ``axis`` (1 or 2)."""
    torch = torch_module()
    radius = (len(weights) - 1) // 2
    padded = reflect_pad(x, axis, radius, radius)
    kernel = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
    if axis == 1:
        padded = padded.transpose(1, 2)
    z, rows, length = padded.shape
    out = torch.nn.functional.conv1d(padded.reshape(z * rows, 1, length), kernel.view(1, 1, -1))
    out = out.reshape(z, rows, length - 2 * radius)
    return out.transpose(1, 2) if axis == 1 else out


def _max_over_footprint(padded: Any, offsets: list[tuple[int, int, int]], shape: tuple[int, int], pad: tuple[int, int]) -> Any:
    """Maximum over ``offsets`` (dy, dx_first, dx_last) of a padded float tensor."""
    torch = torch_module()
    z, (ny, nx), (py, px) = padded.shape[0], shape, pad
    out = None
    for dy, first, last in offsets:
        rows = padded[:, py + dy : py + dy + ny, :]
        width = last - first + 1
        if width > 1:
            flat = rows.reshape(z * ny, 1, rows.shape[-1])
            pooled = torch.nn.functional.max_pool1d(flat, kernel_size=width, stride=1)
            rows = pooled.reshape(z, ny, -1)
        part = rows[:, :, px + first : px + first + nx]
        out = part if out is None else torch.maximum(out, part)
    return out


def dilate(x: Any, footprint: np.ndarray) -> Any:
    """Grey dilation of a float tensor by a flat footprint (reflected, as scipy.ndimage does)."""
    torch = torch_module()
    fp = np.asarray(footprint, dtype=bool)[::-1, ::-1]
    py, px = fp.shape[0] // 2, fp.shape[1] // 2
    padded = torch.nn.functional.pad(x.unsqueeze(1), (px, px, py, py), value=float("-inf")).squeeze(1)
    return _max_over_footprint(padded, footprint_offsets(fp), tuple(x.shape[1:]), (py, px))


def erode(x: Any, footprint: np.ndarray) -> Any:
    """Grey erosion of a float tensor by a flat footprint; pixels outside the image are ignored."""
    fp = np.asarray(footprint, dtype=bool)
    py, px = fp.shape[0] // 2, fp.shape[1] // 2
    torch = torch_module()
    padded = torch.nn.functional.pad((-x).unsqueeze(1), (px, px, py, py), value=float("-inf")).squeeze(1)
    return -_max_over_footprint(padded, footprint_offsets(fp), tuple(x.shape[1:]), (py, px))


def opening(x: Any, footprint: np.ndarray) -> Any:
    """Grey opening (erosion then dilation) of a float tensor."""
    return dilate(erode(x, footprint), footprint)
