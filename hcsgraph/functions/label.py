"""``label``: connected components of each Z plane's mask, as int32 labels (0 is background).

Each plane is labelled on its own, starting from 1. ``connectivity=1`` joins pixels that share an
edge, ``connectivity=2`` also those that touch at a corner. Torch has no connected-components
operation, so there is no torch version. pyclesperanto numbers the objects in its own order: the
same objects, possibly other numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hcsgraph.functions import _cle_ops
from hcsgraph.functions._common import check_stack
from hcsgraph.memory.decorators import numpy as numpy_func
from hcsgraph.memory.decorators import pyclesperanto as cle_func


def check_connectivity(connectivity: Any, name: str = "label") -> int:
    """``connectivity`` as 1 or 2, or a ``ValueError``."""
    if connectivity not in (1, 2) or isinstance(connectivity, bool):
        raise ValueError(f"{name}: connectivity={connectivity!r} must be 1 (edges) or 2 (edges and corners)")
    return int(connectivity)


def label_planes(mask: np.ndarray, connectivity: int) -> np.ndarray:
    """int32 labels of every plane of a ``[Z, Y, X]`` bool mask.

    The numbering is scikit-image's ``label`` (which runs ``scipy.ndimage.label`` on masks);
    each plane is labelled straight into the int32 result.
    """
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(2, connectivity)
    out = np.empty(mask.shape, dtype=np.int32)
    for z, plane in enumerate(mask):
        ndimage.label(plane, structure=structure, output=out[z])
    return out


@numpy_func
def label(stack: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Label the connected objects of each Z plane's mask (scikit-image); returns int32 labels."""
    check_stack(stack, "label")
    connectivity = check_connectivity(connectivity)
    stack = np.asarray(stack)
    return label_planes(stack if stack.dtype == bool else stack != 0, connectivity)


@cle_func
def label_cle(stack: Any, connectivity: int = 1) -> Any:
    """Label the connected objects of each Z plane's mask (pyclesperanto); returns int32 labels."""
    cle = _cle_ops.cle_module()
    check_stack(stack, "label")
    mode = "sphere" if check_connectivity(connectivity) == 1 else "box"

    def label_plane(plane: Any) -> Any:
        return cle.connected_component_labeling(cle.not_equal_constant(plane, scalar=0), connectivity=mode)

    return _cle_ops.per_slice(label_plane, stack, np.int32)
