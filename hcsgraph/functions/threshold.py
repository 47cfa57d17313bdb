"""``threshold_otsu``: a foreground mask per Z plane from Otsu's threshold of that plane.

The mask is ``plane > threshold``. The numpy and torch versions compute the threshold exactly as
scikit-image does: integer planes use one histogram bin per grey level, float planes 256 bins
between the plane's minimum and maximum, and the threshold is the centre of the bin that
maximises the between-class variance. A constant plane gives an empty mask. pyclesperanto uses
its own 256-bin histogram, so its threshold can differ slightly; on images whose foreground and
background are separated its mask is the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hcsgraph.functions import _cle_ops, _torch_ops
from hcsgraph.functions._common import check_stack, positive_int
from hcsgraph.memory.decorators import numpy as numpy_func
from hcsgraph.memory.decorators import pyclesperanto as cle_func
from hcsgraph.memory.decorators import torch as torch_func

NBINS = 256
"""Histogram bins for float planes (integer planes use one bin per grey level)."""


def _otsu_threshold_numpy(plane: np.ndarray) -> float | None:
    """scikit-image's Otsu threshold of one plane; None for an empty or constant plane.

    Unsigned planes of up to 16 bits take one histogram pass (``bincount``) handed to
    scikit-image as its own one-bin-per-grey-level histogram.
    """
    from skimage.filters import threshold_otsu as skimage_otsu

    if plane.size == 0:
        return None
    if plane.dtype.kind == "u" and plane.dtype.itemsize <= 2:
        counts = np.bincount(plane.reshape(-1))
        present = np.flatnonzero(counts)
        low, high = int(present[0]), int(present[-1])
        if low == high:
            return None
        return float(skimage_otsu(hist=(counts[low:high + 1], np.arange(low, high + 1))))
    if plane.min() == plane.max():
        return None
    return float(skimage_otsu(plane, nbins=NBINS))


@numpy_func
def threshold_otsu(stack: np.ndarray) -> np.ndarray:
    """Foreground mask (bool) of each Z plane from that plane's Otsu threshold (scikit-image)."""
    check_stack(stack, "threshold_otsu")
    stack = np.asarray(stack)
    if stack.dtype == bool:
        return stack.copy()
    out = np.zeros(stack.shape, dtype=bool)
    for z, plane in enumerate(stack):
        threshold = _otsu_threshold_numpy(plane)
        if threshold is not None:
            np.greater(plane, threshold, out=out[z])
    return out


def _otsu_threshold_torch(plane: Any) -> Any:
    """scikit-image's Otsu threshold of one torch plane (float64 arithmetic)."""
    torch = _torch_ops.torch_module()
    values = plane.reshape(-1)
    if values.dtype.is_floating_point:
        values = values.to(torch.float64)
        lo, hi = values.min(), values.max()
        edges = torch.linspace(float(lo), float(hi), NBINS + 1, dtype=torch.float64, device=plane.device)
        index = torch.bucketize(values, edges, right=True) - 1
        hist = torch.bincount(index.clamp(0, NBINS - 1), minlength=NBINS).to(torch.float64)
        centers = (edges[:-1] + edges[1:]) / 2
    else:
        values = values.to(torch.int64)
        lo = values.min()
        hist = torch.bincount(values - lo).to(torch.float64)
        centers = torch.arange(hist.numel(), dtype=torch.float64, device=plane.device) + lo.to(torch.float64)
    weight1 = torch.cumsum(hist, 0)
    weight2 = torch.flip(torch.cumsum(torch.flip(hist, [0]), 0), [0])
    mean1 = torch.cumsum(hist * centers, 0) / weight1
    mean2 = torch.flip(torch.cumsum(torch.flip(hist * centers, [0]), 0) / torch.flip(weight2, [0]), [0])
    variance = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
    variance = torch.nan_to_num(variance, nan=-1.0)
    return centers[torch.argmax(variance)]


@torch_func(oom_recovery=True)
def threshold_otsu_torch(stack: Any) -> Any:
    """Foreground mask (bool) of each Z plane from that plane's Otsu threshold (histogram in torch)."""
    torch = _torch_ops.torch_module()
    check_stack(stack, "threshold_otsu")
    if stack.dtype == torch.bool:
        return stack.clone()
    x = stack.to(torch.int32) if stack.dtype in (torch.uint16, torch.uint32) else stack
    out = torch.zeros(stack.shape, dtype=torch.bool, device=stack.device)
    for z in range(x.shape[0]):
        plane = x[z]
        if plane.numel() == 0 or bool(plane.min() == plane.max()):
            continue
        threshold = _otsu_threshold_torch(plane)
        out[z] = plane.to(torch.float64) > threshold
    return out


@cle_func
def threshold_otsu_cle(stack: Any) -> Any:
    """Foreground mask (uint8 0/1, OpenCL has no bool) of each Z plane (pyclesperanto threshold_otsu)."""
    cle = _cle_ops.cle_module()
    check_stack(stack, "threshold_otsu")
    return _cle_ops.per_slice(lambda plane: cle.threshold_otsu(plane), stack, np.uint8)


# ------------------------------------------------------------------------------ threshold_local

LOCAL_METHODS = ("gaussian", "mean")


def _local_params(block_size: Any, method: str, name: str = "threshold_local") -> tuple[int, str]:
    block_size = positive_int(block_size, "block_size", name, minimum=3)
    if block_size % 2 == 0:
        raise ValueError(f"{name}: block_size={block_size} must be odd")
    if method not in LOCAL_METHODS:
        raise ValueError(f"{name}: method={method!r} must be one of {', '.join(LOCAL_METHODS)}")
    return block_size, method


@numpy_func
def threshold_local(stack: np.ndarray, block_size: int = 51, offset: float = 0.0, method: str = "gaussian") -> np.ndarray:
    """Adaptive foreground mask (bool): each pixel above its neighbourhood's weighted mean minus ``offset``.

    scikit-image's ``threshold_local`` per Z plane (``mode="reflect"``): ``method="gaussian"``
    weighs a ``block_size`` neighbourhood with a Gaussian of sigma ``(block_size - 1) / 6``,
    ``"mean"`` takes the plain ``block_size`` x ``block_size`` mean. The mask is
    ``plane > threshold``. Integer planes are thresholded in float64.
    """
    from skimage.filters import threshold_local as skimage_local

    check_stack(stack, "threshold_local")
    block_size, method = _local_params(block_size, method)
    stack = np.asarray(stack)
    out = np.zeros(stack.shape, dtype=bool)
    for z, plane in enumerate(stack):
        if plane.dtype == bool:
            plane = plane.astype(np.uint8)
        np.greater(plane, skimage_local(plane, block_size, method=method, offset=offset, mode="reflect"), out=out[z])
    return out


@torch_func(oom_recovery=True)
def threshold_local_torch(stack: Any, block_size: int = 51, offset: float = 0.0, method: str = "gaussian") -> Any:
    """Adaptive foreground mask (bool), scikit-image's ``threshold_local`` in torch (float64, reflect borders)."""
    torch = _torch_ops.torch_module()
    check_stack(stack, "threshold_local")
    block_size, method = _local_params(block_size, method)
    dtype = torch.float32 if stack.dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.float64
    x = stack.to(dtype)
    if method == "gaussian":
        weights = _torch_ops.gaussian_kernel((block_size - 1) / 6.0, 4.0)
    else:
        weights = np.full(block_size, 1.0 / block_size)
    local = _torch_ops.correlate_axis(_torch_ops.correlate_axis(x, weights, 1), weights, 2)
    return x > local - offset
