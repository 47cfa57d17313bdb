"""``binary_opening``: remove foreground specks smaller than a footprint, per Z plane.

The footprint is a disk of ``radius`` (scikit-image's ``disk``), a square, or any 2-D array with
odd sides. Pixels outside the image count as foreground for the erosion and background for the
dilation (scikit-image's convention), so objects touching the border are not eaten away. The numpy
and torch versions give identical masks; pyclesperanto agrees away from the image border.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hcsgraph.functions import _cle_ops, _torch_ops
from hcsgraph.functions._common import check_footprint, check_stack, make_footprint
from hcsgraph.memory.decorators import numpy as numpy_func
from hcsgraph.memory.decorators import pyclesperanto as cle_func
from hcsgraph.memory.decorators import torch as torch_func


def opening_footprint(radius: int, footprint: Any, shape: str, name: str = "binary_opening") -> np.ndarray:
    """The footprint given, else a ``shape`` footprint of ``radius``."""
    if footprint is not None:
        return check_footprint(footprint, name)
    return make_footprint(radius, shape, name)


@numpy_func
def binary_opening(stack: np.ndarray, radius: int = 2, footprint: Any = None, shape: str = "disk") -> np.ndarray:
    """Morphological opening of each Z plane's mask (scipy.ndimage); any nonzero pixel is foreground."""
    from scipy import ndimage

    check_stack(stack, "binary_opening")
    # The footprint has extent 1 along Z, so one call over the stack opens each plane on its own.
    fp = opening_footprint(radius, footprint, shape)[None]
    eroded = ndimage.binary_erosion(np.asarray(stack) != 0, structure=fp, border_value=1)
    return ndimage.binary_dilation(eroded, structure=fp, border_value=0)


@torch_func(oom_recovery=True)
def binary_opening_torch(stack: Any, radius: int = 2, footprint: Any = None, shape: str = "disk") -> Any:
    """Morphological opening of each Z plane's mask (min/max pooling); returns bool."""
    torch = _torch_ops.torch_module()
    check_stack(stack, "binary_opening")
    fp = opening_footprint(radius, footprint, shape)
    mask = (stack != 0).to(torch.float32)
    return _torch_ops.opening(mask, fp) > 0.5


@cle_func
def binary_opening_cle(stack: Any, radius: int = 2, footprint: Any = None, shape: str = "disk") -> Any:
    """Morphological opening of each Z plane's mask (pyclesperanto); returns uint8 0/1."""
    cle = _cle_ops.cle_module()
    check_stack(stack, "binary_opening")
    fp = opening_footprint(radius, footprint, shape)
    mask = cle.not_equal_constant(stack, scalar=0)
    return _cle_ops.cast(cle.opening(mask, _cle_ops.footprint_array(fp)), np.uint8)
