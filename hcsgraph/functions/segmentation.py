"""Segmentation of objects in each Z plane: split, filter, clean and grow label images.

* ``watershed``: split touching objects of a mask or a label image (distance transform, one marker
  per local maximum, scikit-image's watershed); int32 labels, numbered 1..N per plane.
* ``remove_small_objects`` / ``remove_large_objects``: drop objects by area (pixels).
* ``clear_border``: drop objects that touch the image border (or lie within ``buffer_size`` of it).
* ``fill_holes``: fill the holes of a mask, or of every object of a label image.
* ``expand_labels``: grow every label by ``distance`` pixels into the background without
  overlapping its neighbours (a cell region around each nucleus).

Masks and labels: a bool plane is a mask, whose objects are its connected components
(``connectivity`` 1: edges, 2: edges and corners); an integer plane is a label image, each distinct
nonzero value one object (0 is background, negative values are an error). Filters keep the input's
kind and dtype: a mask stays a mask, labels keep their numbers (no renumbering). ``watershed`` and
``expand_labels`` return labels (int32 for a mask input). Every function works plane by plane.

Other versions (tested against numpy): torch ``remove_small_objects``, ``remove_large_objects`` and
``clear_border`` are exact. pyclesperanto ``remove_small_objects``, ``remove_large_objects``,
``clear_border`` (``buffer_size=0`` only) are exact on label images (OpenCL has no bool: a uint8 0/1
mask is one object, label it first); pyclesperanto ``expand_labels`` grows labels by repeated
dilation instead of a Euclidean distance, so the outlines differ (its cells come out 3-10% larger):
on separate nuclei of radius 6-10 expanded by 5 pixels at least 95% of the pixels agree and every
cell has an IoU of 0.85 or more with, and an area within 15% of, the numpy one (tested).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hcsgraph.functions import _cle_ops, _torch_ops
from hcsgraph.functions._common import check_stack, positive_int
from hcsgraph.functions.label import check_connectivity, label_planes
from hcsgraph.memory.decorators import numpy as numpy_func
from hcsgraph.memory.decorators import pyclesperanto as cle_func
from hcsgraph.memory.decorators import torch as torch_func

# --------------------------------------------------------------------------------------- helpers


def as_labels(stack: np.ndarray, name: str, connectivity: int = 1) -> tuple[np.ndarray, bool]:
    """``(labels, was_mask)``: a bool stack labelled per plane (int32), an integer stack as it is.

    Raises ``TypeError`` for float stacks and ``ValueError`` for negative labels, naming ``name``.
    """
    stack = np.asarray(stack)
    if stack.dtype == bool:
        return label_planes(stack, connectivity), True
    if not np.issubdtype(stack.dtype, np.integer):
        raise TypeError(
            f"{name}: expected a bool mask or an integer label image, got dtype {stack.dtype}; "
            "threshold the image first (e.g. threshold_otsu)"
        )
    if np.issubdtype(stack.dtype, np.signedinteger) and stack.size and stack.min() < 0:
        raise ValueError(f"{name}: a label image cannot hold negative labels")
    return stack, False


def pixel_areas(plane: np.ndarray) -> np.ndarray:
    """The area (pixel count) of each pixel's object, per pixel (the background gets its own count)."""
    flat = plane.reshape(-1)
    if flat.size == 0:
        return np.zeros(plane.shape, dtype=np.int64)
    top = int(flat.max())
    if top <= 2 * flat.size + 1024 and np.can_cast(flat.dtype, np.intp, casting="safe"):
        return np.bincount(flat, minlength=top + 1)[flat].reshape(plane.shape)
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    return counts[inverse].reshape(plane.shape)


def _keep(stack: np.ndarray, labels: np.ndarray, keep: np.ndarray, was_mask: bool) -> np.ndarray:
    """The objects where ``keep`` is True: a mask for a mask input, labels (same numbers) otherwise."""
    if was_mask:
        return keep & (labels != 0)
    return np.where(keep, stack, np.zeros((), dtype=stack.dtype))


def _filter_by_area(stack: Any, name: str, connectivity: int, test: Any) -> np.ndarray:
    check_stack(stack, name)
    connectivity = check_connectivity(connectivity, name)
    stack = np.asarray(stack)
    labels, was_mask = as_labels(stack, name, connectivity)
    keep = np.zeros(labels.shape, dtype=bool)
    for z, plane in enumerate(labels):
        keep[z] = test(pixel_areas(plane))
    return _keep(stack, labels, keep, was_mask)


def border_mask(shape: tuple[int, int], buffer_size: int) -> np.ndarray:
    """True on the ``buffer_size + 1`` outermost rows and columns of a plane."""
    border = np.zeros(shape, dtype=bool)
    ext = buffer_size + 1
    border[:ext] = border[-ext:] = True
    border[:, :ext] = border[:, -ext:] = True
    return border


def _check_buffer(buffer_size: Any, shape: tuple[int, ...], name: str = "clear_border") -> int:
    buffer_size = positive_int(buffer_size, "buffer_size", name, minimum=0)
    if len(shape) == 3 and any(buffer_size >= s for s in shape[1:]):
        raise ValueError(f"{name}: buffer_size={buffer_size} is not smaller than the plane {shape[1:]}")
    return buffer_size


def _check_distance(distance: Any, name: str = "expand_labels") -> float:
    if isinstance(distance, bool) or not isinstance(distance, int | float | np.integer | np.floating) or distance < 0:
        raise ValueError(f"{name}: distance={distance!r} must be a number >= 0 (pixels)")
    return float(distance)


# --------------------------------------------------------------------------------------- numpy


@numpy_func
def watershed(
    stack: np.ndarray, min_distance: int = 5, connectivity: int = 1, compactness: float = 0.0
) -> np.ndarray:
    """Split touching objects of a mask or label image (distance transform + watershed); int32 labels.

    The Euclidean distance to the background has one marker per local maximum at least
    ``min_distance`` pixels from the next (scikit-image's ``peak_local_max``, inside each object);
    scikit-image's ``watershed`` of the negated distance from those markers, restricted to the
    foreground, splits each object along its necks. Labels of an input label image are never
    merged: every output object lies inside one input object. Objects are numbered 1..N per plane
    in raster order of their first pixel.
    """
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.segmentation import join_segmentations
    from skimage.segmentation import watershed as skimage_watershed

    check_stack(stack, "watershed")
    min_distance = positive_int(min_distance, "min_distance", "watershed")
    connectivity = check_connectivity(connectivity, "watershed")
    labels, _ = as_labels(np.asarray(stack), "watershed", connectivity)
    out = np.zeros(labels.shape, dtype=np.int32)
    for z, plane in enumerate(labels):
        mask = plane != 0
        if not mask.any():
            continue
        # Each object's own distance: a pixel next to another label counts as background for it.
        distance = ndimage.distance_transform_edt(mask & ~_touches_other(plane))
        peaks = peak_local_max(distance, min_distance=min_distance, labels=plane, exclude_border=False)
        markers = np.zeros(plane.shape, dtype=np.int32)
        markers[tuple(peaks.T)] = 1
        markers = ndimage.label(markers, structure=np.ones((3, 3), dtype=bool))[0]
        split = skimage_watershed(-distance, markers, mask=mask, connectivity=connectivity, compactness=compactness)
        # An object without a marker (too thin for a maximum) stays whole: its pixels pair with 0.
        out[z] = _raster_order(join_segmentations(plane, split) * mask)
    return out


def _touches_other(plane: np.ndarray) -> np.ndarray:
    """True where a foreground pixel has a 4-neighbour of another nonzero label."""
    out = np.zeros(plane.shape, dtype=bool)
    for axis in (0, 1):
        a = np.moveaxis(plane, axis, 0)
        o = np.moveaxis(out, axis, 0)
        differ = (a[1:] != a[:-1]) & (a[1:] != 0) & (a[:-1] != 0)
        o[1:] |= differ
        o[:-1] |= differ
    return out


def _raster_order(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered by the raster position of each object's first pixel (0 stays 0)."""
    flat = labels.reshape(-1)
    values, first = np.unique(flat, return_index=True)
    order = np.argsort(first, kind="stable")
    ranks = np.empty(len(values), dtype=np.int64)
    nonzero = values[order] != 0
    ranks[order[nonzero]] = np.arange(1, int(nonzero.sum()) + 1)
    ranks[order[~nonzero]] = 0
    return ranks[np.searchsorted(values, flat)].reshape(labels.shape)


@numpy_func
def remove_small_objects(stack: np.ndarray, min_area: int = 64, connectivity: int = 1) -> np.ndarray:
    """Remove objects smaller than ``min_area`` pixels from each plane (mask or labels, kind kept)."""
    min_area = positive_int(min_area, "min_area", "remove_small_objects", minimum=0)
    return _filter_by_area(stack, "remove_small_objects", connectivity, lambda area: area >= min_area)


@numpy_func
def remove_large_objects(stack: np.ndarray, max_area: int = 10_000, connectivity: int = 1) -> np.ndarray:
    """Remove objects larger than ``max_area`` pixels from each plane (mask or labels, kind kept)."""
    max_area = positive_int(max_area, "max_area", "remove_large_objects", minimum=0)
    return _filter_by_area(stack, "remove_large_objects", connectivity, lambda area: area <= max_area)


@numpy_func
def clear_border(stack: np.ndarray, buffer_size: int = 0, connectivity: int = 1) -> np.ndarray:
    """Remove objects touching the border of each plane (or within ``buffer_size`` pixels of it).

    An object is a label value (all its pixels go, even parts not connected to the border) or a
    connected component of a mask. Matches scikit-image's ``clear_border`` on label images whose
    objects are connected.
    """
    check_stack(stack, "clear_border")
    stack = np.asarray(stack)
    buffer_size = _check_buffer(buffer_size, stack.shape)
    connectivity = check_connectivity(connectivity, "clear_border")
    labels, was_mask = as_labels(stack, "clear_border", connectivity)
    if labels.shape[0] == 0:
        return stack.copy()
    border = border_mask(labels.shape[1:], buffer_size)
    keep = np.zeros(labels.shape, dtype=bool)
    for z, plane in enumerate(labels):
        keep[z] = ~np.isin(plane, np.unique(plane[border]))
    return _keep(stack, labels, keep, was_mask)


@numpy_func
def fill_holes(stack: np.ndarray) -> np.ndarray:
    """Fill holes (background not connected to the border) of each plane's mask or of each object.

    A mask is filled as scipy's ``binary_fill_holes`` does (holes are 4-connected background). In a
    label image, each object's own holes take its label; background enclosed by several objects
    together stays background.
    """
    from scipy import ndimage

    check_stack(stack, "fill_holes")
    stack = np.asarray(stack)
    labels, was_mask = as_labels(stack, "fill_holes")
    if was_mask:
        out = np.zeros(stack.shape, dtype=bool)
        for z, plane in enumerate(stack):
            ndimage.binary_fill_holes(plane, output=out[z])
        return out
    out = stack.copy()
    for z, plane in enumerate(labels):
        holes = ndimage.binary_fill_holes(plane != 0) & (plane == 0)
        if not holes.any():
            continue
        for index, box in enumerate(ndimage.find_objects(plane), start=1):
            if box is None:
                continue
            own = plane[box] == index
            filled = ndimage.binary_fill_holes(own) & ~own & holes[box]
            out[z][box][filled] = index
    return out


@numpy_func
def expand_labels(stack: np.ndarray, distance: float = 5, connectivity: int = 1) -> np.ndarray:
    """Grow each label by up to ``distance`` pixels into the background, never into another label.

    scikit-image's ``expand_labels`` per plane (each background pixel within ``distance`` of a label
    takes the nearest one): a cell region around each nucleus. A mask is labelled first (int32).
    """
    from skimage.segmentation import expand_labels as skimage_expand

    check_stack(stack, "expand_labels")
    distance = _check_distance(distance)
    connectivity = check_connectivity(connectivity, "expand_labels")
    labels, _ = as_labels(np.asarray(stack), "expand_labels", connectivity)
    out = np.empty(labels.shape, dtype=labels.dtype)
    for z, plane in enumerate(labels):
        out[z] = skimage_expand(plane, distance=distance)
    return out


def labels_dtype(dtype: Any) -> np.dtype:
    """Output dtype of ``expand_labels``: int32 for a mask, the label dtype otherwise."""
    dtype = np.dtype(dtype)
    return np.dtype(np.int32) if dtype == np.dtype(bool) else dtype


# --------------------------------------------------------------------------------------- torch


def _torch_areas(plane: Any) -> Any:
    """Per-pixel object area of a non-negative integer torch plane."""
    torch = _torch_ops.torch_module()
    flat = plane.reshape(-1).to(torch.int64)
    if flat.numel() == 0:
        return flat.reshape(plane.shape)
    uniques, inverse, counts = torch.unique(flat, return_inverse=True, return_counts=True)
    return counts[inverse].reshape(plane.shape)


def _torch_labels(stack: Any, name: str, connectivity: int) -> tuple[Any, bool]:
    """A torch stack as labels: integer stacks as they are, bool masks labelled (on the host)."""
    torch = _torch_ops.torch_module()
    if stack.dtype == torch.bool:
        host = stack.detach().cpu().numpy()
        return torch.from_numpy(label_planes(host, connectivity)).to(stack.device), True
    if stack.dtype.is_floating_point or stack.dtype.is_complex:
        raise TypeError(f"{name}: expected a bool mask or an integer label image, got dtype {stack.dtype}")
    if stack.numel() and bool((stack.to(torch.int64) < 0).any()):
        raise ValueError(f"{name}: a label image cannot hold negative labels")
    return stack, False


def _torch_keep(stack: Any, labels: Any, keep: Any, was_mask: bool) -> Any:
    torch = _torch_ops.torch_module()
    if was_mask:
        return keep & (labels != 0)
    return torch.where(keep, stack, torch.zeros((), dtype=stack.dtype, device=stack.device))


def _torch_filter_by_area(stack: Any, name: str, connectivity: int, test: Any) -> Any:
    torch = _torch_ops.torch_module()
    check_stack(stack, name)
    labels, was_mask = _torch_labels(stack, name, check_connectivity(connectivity, name))
    keep = torch.zeros(tuple(labels.shape), dtype=torch.bool, device=labels.device)
    for z in range(labels.shape[0]):
        keep[z] = test(_torch_areas(labels[z]))
    return _torch_keep(stack, labels, keep, was_mask)


@torch_func(oom_recovery=True)
def remove_small_objects_torch(stack: Any, min_area: int = 64, connectivity: int = 1) -> Any:
    """Remove objects smaller than ``min_area`` pixels from each plane (torch; masks labelled on the host)."""
    min_area = positive_int(min_area, "min_area", "remove_small_objects", minimum=0)
    return _torch_filter_by_area(stack, "remove_small_objects", connectivity, lambda area: area >= min_area)


@torch_func(oom_recovery=True)
def remove_large_objects_torch(stack: Any, max_area: int = 10_000, connectivity: int = 1) -> Any:
    """Remove objects larger than ``max_area`` pixels from each plane (torch; masks labelled on the host)."""
    max_area = positive_int(max_area, "max_area", "remove_large_objects", minimum=0)
    return _torch_filter_by_area(stack, "remove_large_objects", connectivity, lambda area: area <= max_area)


@torch_func(oom_recovery=True)
def clear_border_torch(stack: Any, buffer_size: int = 0, connectivity: int = 1) -> Any:
    """Remove objects touching the border of each plane (torch; masks labelled on the host)."""
    torch = _torch_ops.torch_module()
    check_stack(stack, "clear_border")
    buffer_size = _check_buffer(buffer_size, tuple(stack.shape))
    labels, was_mask = _torch_labels(stack, "clear_border", check_connectivity(connectivity, "clear_border"))
    border = torch.from_numpy(border_mask(tuple(labels.shape[1:]), buffer_size)).to(labels.device)
    keep = torch.zeros(tuple(labels.shape), dtype=torch.bool, device=labels.device)
    for z in range(labels.shape[0]):
        plane = labels[z].to(torch.int64)
        keep[z] = ~torch.isin(plane, torch.unique(plane[border]))
    return _torch_keep(stack, labels, keep, was_mask)


# ------------------------------------------------------------------------------- pyclesperanto


def _cle_filtered(stack: Any, name: str, op: Any) -> Any:
    """``stack`` where ``op(plane)`` (a pyclesperanto label filter) keeps a label; numbers and dtype kept."""
    cle = _cle_ops.cle_module()
    check_stack(stack, name)
    if np.dtype(stack.dtype).kind not in "iu":
        raise TypeError(f"{name}: the pyclesperanto version takes an integer label image, got {stack.dtype}")

    def plane_op(plane: Any) -> Any:
        # pyclesperanto renumbers what it keeps: only its "kept" mask is used, the labels stay ours.
        kept = cle.greater_constant(op(plane), scalar=0)
        return cle.multiply_images(plane, kept)

    return _cle_ops.per_slice(plane_op, stack, stack.dtype)


def _cle_filter_by_area(stack: Any, name: str, area: Any, area_name: str, connectivity: int, op: Any) -> Any:
    """``_cle_filtered`` with ``op(cle, plane, area)``, a pyclesperanto size filter, after the argument checks."""
    cle = _cle_ops.cle_module()
    area = positive_int(area, area_name, name, minimum=0)
    check_connectivity(connectivity, name)
    return _cle_filtered(stack, name, lambda plane: op(cle, plane, float(area)))


@cle_func
def remove_small_objects_cle(stack: Any, min_area: int = 64, connectivity: int = 1) -> Any:
    """Remove labels smaller than ``min_area`` pixels from each plane (pyclesperanto remove_small_labels)."""
    return _cle_filter_by_area(stack, "remove_small_objects", min_area, "min_area", connectivity,
                               lambda cle, plane, area: cle.remove_small_labels(plane, minimum_size=area))


@cle_func
def remove_large_objects_cle(stack: Any, max_area: int = 10_000, connectivity: int = 1) -> Any:
    """Remove labels larger than ``max_area`` pixels from each plane (pyclesperanto remove_large_labels)."""
    return _cle_filter_by_area(stack, "remove_large_objects", max_area, "max_area", connectivity,
                               lambda cle, plane, area: cle.remove_large_labels(plane, maximum_size=area))


@cle_func
def clear_border_cle(stack: Any, buffer_size: int = 0, connectivity: int = 1) -> Any:
    """Remove labels touching the border of each plane (pyclesperanto exclude_labels_on_edges)."""
    cle = _cle_ops.cle_module()
    if _check_buffer(buffer_size, tuple(stack.shape)) != 0:
        raise ValueError("clear_border: the pyclesperanto version supports only buffer_size=0")
    check_connectivity(connectivity, "clear_border")
    return _cle_filtered(stack, "clear_border", lambda plane: cle.exclude_labels_on_edges(plane))


@cle_func
def expand_labels_cle(stack: Any, distance: float = 5, connectivity: int = 1) -> Any:
    """Grow each label by ``distance`` pixels without overlap (pyclesperanto dilate_labels); dtype kept."""
    cle = _cle_ops.cle_module()
    check_stack(stack, "expand_labels")
    radius = int(round(_check_distance(distance)))
    check_connectivity(connectivity, "expand_labels")
    if np.dtype(stack.dtype).kind not in "iu":
        raise TypeError(f"expand_labels: the pyclesperanto version takes an integer label image, got {stack.dtype}")
    return _cle_ops.per_slice(lambda plane: cle.dilate_labels(plane, radius=radius), stack, stack.dtype)
