"""``count_cells``: count the objects of each Z plane and hand the counts on as ``cell_counts``."""

from __future__ import annotations

from typing import Any

import numpy as np

from hcsgraph.functions._common import check_stack, positive_int
from hcsgraph.functions.label import check_connectivity, label_planes
from hcsgraph.memory.decorators import numpy as numpy_func
from hcsgraph.pipeline.contracts import special_outputs
from hcsgraph.pipeline.materializers import materialize_cell_counts


def _labels_of(stack: np.ndarray, connectivity: int) -> np.ndarray:
    if stack.dtype == bool:
        return label_planes(stack, connectivity)
    if np.issubdtype(stack.dtype, np.integer):
        if np.issubdtype(stack.dtype, np.signedinteger) and stack.size and stack.min() < 0:
            raise ValueError("count_cells: a label image cannot hold negative labels")
        return stack
    raise TypeError(
        f"count_cells: expected a bool mask or an integer label image, got dtype {stack.dtype}; "
        "threshold the image first (e.g. threshold_otsu)"
    )


def object_areas(labels: np.ndarray) -> np.ndarray:
    """Pixel count of every distinct nonzero label of a non-negative integer label image.

    Only the foreground pixels are counted: a histogram when the labels are dense (as ``label``
    makes them), a sort otherwise.
    """
    foreground = labels[labels != 0]
    if foreground.size == 0:
        return np.zeros(0, dtype=np.int64)
    top = int(foreground.max())
    if top <= 2 * foreground.size + 1024 and np.can_cast(foreground.dtype, np.intp, casting="safe"):
        areas = np.bincount(foreground, minlength=top + 1)[1:]
        return areas[areas > 0]
    return np.unique(foreground, return_counts=True)[1]


@special_outputs(("cell_counts", materialize_cell_counts))
@numpy_func
def count_cells(
    stack: np.ndarray, connectivity: int = 1, min_area: int = 0
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Count the objects in each Z plane of a bool mask or an integer label image.

    A bool mask is labelled first (``connectivity`` 1 or 2); an integer image is taken as labels,
    each distinct nonzero value one object. Objects smaller than ``min_area`` pixels are not
    counted. Returns the input unchanged and ``cell_counts``: one dict per plane with
    ``slice_index``, ``cell_count``, ``total_area`` and ``mean_area`` (pixels).
    """
    check_stack(stack, "count_cells")
    stack = np.asarray(stack)
    connectivity = check_connectivity(connectivity, "count_cells")
    min_area = positive_int(min_area, "min_area", "count_cells", minimum=0)
    labels = _labels_of(stack, connectivity)
    counts = []
    for z, plane in enumerate(labels):
        areas = object_areas(plane)
        keep = areas[areas >= min_area]
        counts.append(
            {
                "slice_index": z,
                "cell_count": int(keep.size),
                "total_area": int(keep.sum()),
                "mean_area": float(keep.mean()) if keep.size else 0.0,
            }
        )
    return stack, counts
