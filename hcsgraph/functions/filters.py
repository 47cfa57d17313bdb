"""Smoothing and background filters: ``gaussian_filter``, ``median_filter``, ``background_subtract``.

Each works on every Z plane in 2-D and returns the input dtype. Integer results follow
scipy.ndimage: the Gaussian is applied one axis at a time and each pass stores its result in the
input dtype, truncating toward zero (so a uint16 blur may read up to 1 lower than the exact value
per pass). Borders follow scipy's ``mode="reflect"``.

Agreement between versions (tested): torch equals scipy to within 1e-4 relative for floats and
within 1 grey level for integers (float32 accumulation near integer boundaries); torch median and
top-hat are exact. pyclesperanto clamps at the border and uses its own Gaussian kernel radius, so it
agrees with scipy away from the border (Gaussian within 1 % of the range, median and top-hat exact).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hcsgraph.functions import _cle_ops, _torch_ops
from hcsgraph.functions._common import (
    check_footprint,
    check_stack,
    make_footprint,
    per_slice,
    positive_int,
    sigma_pair,
)
from hcsgraph.memory.decorators import numpy as numpy_func
from hcsgraph.memory.decorators import pyclesperanto as cle_func
from hcsgraph.memory.decorators import torch as torch_func

TRUNCATE = 4.0
"""Gaussian kernels reach ``TRUNCATE`` standard deviations, as in scipy.ndimage."""


def _background_footprint(radius: int, shape: str, footprint: Any, name: str) -> np.ndarray:
    if footprint is not None:
        return check_footprint(footprint, name)
    return make_footprint(radius, shape, name)


# --------------------------------------------------------------------------------------- numpy


@numpy_func
def gaussian_filter(stack: np.ndarray, sigma: float | tuple[float, float] = 2.0) -> np.ndarray:
    """Gaussian blur of each Z plane (scipy.ndimage); keeps the dtype."""
    from scipy import ndimage

    sy, sx = sigma_pair(sigma, "gaussian_filter")
    check_stack(stack, "gaussian_filter")
    # One call over the stack with no smoothing along Z: the same values as plane by plane
    # (scipy skips an axis whose sigma is 0), without a Python loop or a copy to restack.
    return ndimage.gaussian_filter(np.asarray(stack), (0, sy, sx), truncate=TRUNCATE, mode="reflect")


@numpy_func
def median_filter(stack: np.ndarray, size: int = 3) -> np.ndarray:
    """Median of each pixel's ``size`` x ``size`` neighbourhood per Z plane (scipy.ndimage)."""
    from scipy import ndimage

    size = positive_int(size, "size", "median_filter")
    return per_slice(lambda p: ndimage.median_filter(p, size=size, mode="reflect"), stack, "median_filter")


@numpy_func
def background_subtract(
    stack: np.ndarray, radius: int = 25, shape: str = "square", footprint: Any = None
) -> np.ndarray:
    """White top-hat per Z plane: the image minus its opening by a ``radius`` square or disk.

    A square footprint is fast at any radius (separable); ``shape="disk"`` is exact but slower.
    Pixels outside the image are ignored. Keeps the dtype; the result is never negative.
    """
    from skimage import morphology

    fp = _background_footprint(radius, shape, footprint, "background_subtract")
    if footprint is None and shape == "square" and fp.shape[0] > 3:
        fp_arg: Any = morphology.footprint_rectangle(fp.shape, decomposition="separable")
    else:
        fp_arg = fp

    def tophat(plane: np.ndarray) -> np.ndarray:
        opened = morphology.opening(plane, fp_arg, mode="ignore")
        return plane - opened

    return per_slice(tophat, stack, "background_subtract")


# --------------------------------------------------------------------------------------- torch


def _to_dtype_like(result: Any, like: Any) -> Any:
    """Cast a float torch result back to the dtype of ``like`` (integers truncate toward zero)."""
    torch = _torch_ops.torch_module()
    if result.dtype == like.dtype:
        return result
    if like.dtype == torch.bool:
        return result != 0
    if not like.dtype.is_floating_point:
        result = torch.trunc(result)
    return result.to(like.dtype)


@torch_func(oom_recovery=True)
def gaussian_filter_torch(stack: Any, sigma: float | tuple[float, float] = 2.0) -> Any:
    """Gaussian blur of each Z plane (separable conv1d, scipy's kernel and borders); keeps the dtype."""
    torch = _torch_ops.torch_module()
    check_stack(stack, "gaussian_filter")
    sy, sx = sigma_pair(sigma, "gaussian_filter")
    integer = not stack.dtype.is_floating_point
    x = stack.to(_torch_ops.compute_dtype(stack))
    for axis, s in ((1, sy), (2, sx)):
        if s > 1e-15:
            x = _torch_ops.correlate_axis(x, _torch_ops.gaussian_kernel(s, TRUNCATE), axis)
            if integer:
                x = torch.trunc(x)
    return _to_dtype_like(x, stack)


@torch_func(oom_recovery=True)
def median_filter_torch(stack: Any, size: int = 3) -> Any:
    """Median of each pixel's ``size`` x ``size`` neighbourhood per Z plane (unfold + kthvalue)."""
    torch = _torch_ops.torch_module()
    check_stack(stack, "median_filter")
    size = positive_int(size, "size", "median_filter")
    x = stack.to(torch.int32) if stack.dtype in (torch.uint16, torch.uint32, torch.bool) else stack
    before, after = size // 2, size - 1 - size // 2
    x = _torch_ops.reflect_pad(_torch_ops.reflect_pad(x, 1, before, after), 2, before, after)
    windows = x.unfold(1, size, 1).unfold(2, size, 1)
    windows = windows.reshape(*windows.shape[:3], size * size)
    result = windows.kthvalue(size * size // 2 + 1, dim=-1).values
    return result.to(stack.dtype)


@torch_func(oom_recovery=True)
def background_subtract_torch(stack: Any, radius: int = 25, shape: str = "square", footprint: Any = None) -> Any:
    """White top-hat per Z plane: the image minus its opening by a ``radius`` square or disk."""
    check_stack(stack, "background_subtract")
    fp = _background_footprint(radius, shape, footprint, "background_subtract")
    x = stack.to(_torch_ops.compute_dtype(stack))
    return _to_dtype_like(x - _torch_ops.opening(x, fp), stack)


# ------------------------------------------------------------------------------- pyclesperanto


@cle_func
def gaussian_filter_cle(stack: Any, sigma: float | tuple[float, float] = 2.0) -> Any:
    """Gaussian blur of each Z plane (pyclesperanto gaussian_blur); keeps the dtype (truncating)."""
    cle = _cle_ops.cle_module()
    check_stack(stack, "gaussian_filter")
    sy, sx = sigma_pair(sigma, "gaussian_filter")
    blurred = cle.gaussian_blur(stack, sigma_x=sx, sigma_y=sy, sigma_z=0)
    return _cle_ops.cast(blurred, stack.dtype)


@cle_func
def median_filter_cle(stack: Any, size: int = 3) -> Any:
    """Median of each pixel's ``size`` x ``size`` box per Z plane (pyclesperanto); ``size`` must be odd."""
    cle = _cle_ops.cle_module()
    check_stack(stack, "median_filter")
    size = positive_int(size, "size", "median_filter")
    if size % 2 == 0:
        raise ValueError(f"median_filter: the pyclesperanto version needs an odd size, got size={size}")
    radius = size // 2
    return cle.median(stack, radius_x=radius, radius_y=radius, radius_z=0, connectivity="box")


@cle_func
def background_subtract_cle(stack: Any, radius: int = 25, shape: str = "square", footprint: Any = None) -> Any:
    """White top-hat per Z plane: the image minus its opening by a ``radius`` square or disk."""
    cle = _cle_ops.cle_module()
    check_stack(stack, "background_subtract")
    fp = _background_footprint(radius, shape, footprint, "background_subtract")
    opened = cle.opening(stack, _cle_ops.footprint_array(fp))
    return _cle_ops.cast(cle.subtract_images(stack, opened), stack.dtype)
