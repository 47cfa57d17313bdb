"""``measure_objects``: one row per object (shape, position and intensities) as the ``objects`` table.

Where the labels and the intensities come from:

* **A label stack** (the default): every slice of the step's ``[Z, Y, X]`` stack is a label image
  (or a bool mask, labelled with ``connectivity``), e.g. after ``watershed``. Intensities, if any,
  come from ``intensity=``: a mapping ``{"DAPI": dapi_stack, ...}`` of stacks shaped like the
  labels (slice z measured inside the objects of label slice z), or one ``[C, Y, X]`` array with
  ``intensity_slices={"DAPI": 0, "GFP": 1}`` (the same slices for every label slice).
* **Labels and intensities in one stack**: with ``variable_components=("channel",)`` a step's
  stack holds one field's channels ``[C, Y, X]`` in ascending channel order. ``labels_slices``
  says which slices are label images, ``intensity_slices`` which slices to measure, by name; both
  are **0-based positions in the stack** (plate channel 1 is slice 0)::

      FunctionStep("measure_objects", variable_components=("channel",),
                   labels_slices=0, intensity_slices={"GFP": 1, "RFP": 2})

* **Labels from an earlier step** (``measure_objects_with_labels``): the special input ``labels``
  (a ``[L, Y, X]`` label stack that an earlier step of the same grouping returned as its
  special output ``labels``) is measured on the step's own stack, the intensities::

      FunctionStep(segment, variable_components=("channel",))           # returns (stack, labels)
      FunctionStep("measure_objects_with_labels", variable_components=("channel",),
                   labels_slices={"nuclei": 0, "cells": 1}, intensity_slices={"DAPI": 0, "GFP": 1})

``labels_slices`` is an int, a list of ints, or a mapping ``{"nuclei": 0, "cells": 1}`` that names
the object sets: their rows then have an ``objects`` column with that name. Without it every label
slice is measured.

Each row: ``slice_index`` (the position of the label slice; the pipeline turns it into the plate
coordinates site, channel, z, t of the plane at that position of the group, like ``count_cells``;
with labels in a channel-grouped stack, ``channel`` is then the label slice's channel and
``objects`` says which set a row is), ``objects`` (named sets only), ``label``, ``centroid_y``,
``centroid_x``, ``area`` (pixels), ``bbox_min_y``, ``bbox_min_x``, ``bbox_max_y``, ``bbox_max_x``
(max exclusive), ``perimeter``, ``eccentricity``, ``solidity``; with ``pixel_size_um``:
``centroid_y_um``, ``centroid_x_um``, ``area_um2``, ``perimeter_um``; per intensity name N:
``N_mean``, ``N_median``, ``N_min``, ``N_max``, ``N_std`` (population, as numpy's ``std``) and
``N_integrated`` (the sum). The values are scikit-image's ``regionprops_table`` on the same arrays
(tested: equal, except float sums in another order: within 1e-12 relative, eccentricity of round
objects within 1e-6). ``shape_features=False`` skips perimeter, eccentricity and solidity
(perimeter and solidity, from scikit-image object by object, take most of the time).

The rows are handed on as the special output ``objects`` (a list of dicts, one per object) and
written by :data:`hcsgraph.pipeline.tables.materialize_parquet`: one Parquet part per group under
``<output>/objects/well=<W>/``. The image passes through unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hcsgraph.functions._common import check_stack
from hcsgraph.functions.label import check_connectivity
from hcsgraph.functions.segmentation import as_labels
from hcsgraph.memory.decorators import numpy as numpy_func
from hcsgraph.pipeline.contracts import special_inputs, special_outputs
from hcsgraph.pipeline.tables import materialize_parquet

STATS = ("mean", "median", "min", "max", "std", "integrated")
"""Per-channel intensity statistics, in column order."""


# ------------------------------------------------------------------------------ argument checks


def _label_selection(labels_slices: Any, n: int, name: str) -> list[tuple[int, str | None]]:
    """``[(slice, object_set_name or None)]`` from ``labels_slices`` (None: every slice)."""
    if labels_slices is None:
        return [(z, None) for z in range(n)]
    if isinstance(labels_slices, Mapping):
        items = [(_slice(v, n, f"labels_slices[{k!r}]", name), str(k)) for k, v in labels_slices.items()]
    elif isinstance(labels_slices, int | np.integer) and not isinstance(labels_slices, bool):
        items = [(_slice(labels_slices, n, "labels_slices", name), None)]
    elif isinstance(labels_slices, Sequence) and not isinstance(labels_slices, str):
        items = [(_slice(v, n, "labels_slices", name), None) for v in labels_slices]
    else:
        raise TypeError(f"{name}: labels_slices={labels_slices!r} must be an int, a list of ints or a "
                        "mapping {name: slice}")
    if not items:
        raise ValueError(f"{name}: labels_slices is empty")
    return items


def _slice(value: Any, n: int, field: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value < n:
        raise ValueError(f"{name}: {field}={value!r} must be a slice position 0..{n - 1} (0-based) of the stack")
    return int(value)


def _intensity_names(intensity_slices: Any, name: str) -> dict[str, Any]:
    if not isinstance(intensity_slices, Mapping) or not intensity_slices:
        raise TypeError(f"{name}: intensity_slices={intensity_slices!r} must be a non-empty mapping "
                        "{channel name: slice}")
    for key in intensity_slices:
        if not isinstance(key, str) or not key:
            raise TypeError(f"{name}: intensity name {key!r} must be a non-empty string")
    return dict(intensity_slices)


def _check_pixel_size(pixel_size_um: Any, name: str) -> float | None:
    if pixel_size_um is None:
        return None
    if isinstance(pixel_size_um, bool) or not isinstance(pixel_size_um, int | float | np.number) or not pixel_size_um > 0:
        raise ValueError(f"{name}: pixel_size_um={pixel_size_um!r} must be a number > 0 (micrometres per pixel)")
    return float(pixel_size_um)


# ------------------------------------------------------------------------------------ measuring


def _sorted_within_groups(values: np.ndarray, group: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``values`` (grouped by ``group``, ascending) sorted within each group.

    Integer values take one sort of ``value + group * span`` (exact while that stays below 2**53),
    ten times faster than a two-key sort; other values a lexsort.
    """
    low, high = float(values.min()), float(values.max())
    span = high - low + 1.0
    if np.all(values == np.floor(values)) and span * counts.size < 2.0**53:
        offsets = np.arange(counts.size, dtype=np.float64) * span
        return np.sort(values - low + np.repeat(offsets, counts)) - np.repeat(offsets, counts) + low
    return values[np.lexsort((values, group))]


def _grouped_intensity(values: np.ndarray, starts: np.ndarray, counts: np.ndarray,
                       group: np.ndarray) -> dict[str, np.ndarray]:
    """The ``STATS`` of ``values`` (float64, sorted by object) per object."""
    sums = np.add.reduceat(values, starts)
    mean = sums / counts
    dev = values - np.repeat(mean, counts)
    std = np.sqrt(np.add.reduceat(dev * dev, starts) / counts)
    ordered = _sorted_within_groups(values, group, counts)
    median = (ordered[starts + (counts - 1) // 2] + ordered[starts + counts // 2]) / 2.0
    return {
        "mean": mean,
        "median": median,
        "min": np.minimum.reduceat(values, starts),
        "max": np.maximum.reduceat(values, starts),
        "std": std,
        "integrated": sums,
    }


def _eccentricity(rows: np.ndarray, cols: np.ndarray, starts: np.ndarray, counts: np.ndarray,
                  centre_y: np.ndarray, centre_x: np.ndarray) -> np.ndarray:
    """scikit-image's eccentricity from the central moments: ``sqrt(1 - l2 / l1)`` of the inertia tensor."""
    dy = rows - np.repeat(centre_y, counts)
    dx = cols - np.repeat(centre_x, counts)
    mu20 = np.add.reduceat(dy * dy, starts) / counts
    mu02 = np.add.reduceat(dx * dx, starts) / counts
    mu11 = np.add.reduceat(dy * dx, starts) / counts
    # the inertia tensor [[mu02, -mu11], [-mu11, mu20]]: eigenvalues in closed form, clipped at 0
    half_sum = (mu02 + mu20) / 2
    root = np.sqrt(((mu02 - mu20) / 2) ** 2 + mu11**2)
    l1 = np.clip(half_sum + root, 0, None)
    l2 = np.clip(half_sum - root, 0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(l1 == 0, 0.0, np.sqrt(np.clip(1 - l2 / np.where(l1 == 0, 1, l1), 0, None)))


def measure_plane(labels: np.ndarray, intensities: Mapping[str, np.ndarray] | None = None, *,
                  pixel_size_um: float | None = None, shape_features: bool = True) -> dict[str, np.ndarray]:
    """The features of every object of one 2-D label plane, as columns (objects in label order).

    Label, area, centroid, bounding box, eccentricity and the intensities are computed for all
    objects at once (the pixels sorted by label); perimeter and solidity come from scikit-image's
    ``regionprops_table``.
    """
    labels = np.asarray(labels)
    width = labels.shape[1]
    flat = labels.reshape(-1)
    foreground = np.flatnonzero(flat)
    pixels = foreground[np.argsort(flat[foreground], kind="stable")]
    ids, starts, counts = np.unique(flat[pixels], return_index=True, return_counts=True)
    rows, cols = np.divmod(pixels, width)
    rows_f, cols_f = rows.astype(np.float64), cols.astype(np.float64)
    empty = ids.size == 0
    centre_y = np.zeros(0) if empty else np.add.reduceat(rows_f, starts) / counts
    centre_x = np.zeros(0) if empty else np.add.reduceat(cols_f, starts) / counts
    cols_out: dict[str, np.ndarray] = {"label": ids.astype(np.int64), "centroid_y": centre_y, "centroid_x": centre_x}
    if pixel_size_um is not None:
        cols_out["centroid_y_um"] = centre_y * pixel_size_um
        cols_out["centroid_x_um"] = centre_x * pixel_size_um
    cols_out["area"] = counts.astype(np.int64)
    if pixel_size_um is not None:
        cols_out["area_um2"] = counts * pixel_size_um**2
    for axis, values, reduce, shift in (("min_y", rows, np.minimum, 0), ("min_x", cols, np.minimum, 0),
                                        ("max_y", rows, np.maximum, 1), ("max_x", cols, np.maximum, 1)):
        cols_out[f"bbox_{axis}"] = np.zeros(0, np.int64) if empty else reduce.reduceat(values, starts).astype(np.int64) + shift
    if shape_features:
        from skimage.measure import regionprops_table

        table = regionprops_table(labels, properties=("label", "perimeter", "solidity"))
        if not np.array_equal(table["label"], ids):  # regionprops lists the labels in ascending order too
            raise RuntimeError("measure_objects: regionprops listed other labels than the label image holds")
        cols_out["perimeter"] = table["perimeter"]
        if pixel_size_um is not None:
            cols_out["perimeter_um"] = table["perimeter"] * pixel_size_um
        cols_out["eccentricity"] = (np.zeros(0) if empty
                                    else _eccentricity(rows_f, cols_f, starts, counts, centre_y, centre_x))
        cols_out["solidity"] = table["solidity"]
    if intensities:
        group = np.repeat(np.arange(ids.size), counts)
        for channel, image in intensities.items():
            image = np.asarray(image)
            if image.shape != labels.shape:
                raise ValueError(f"intensity {channel!r} has shape {image.shape}, the labels {labels.shape}")
            values = image.reshape(-1)[pixels].astype(np.float64)
            if empty:
                stats = {s: np.zeros(0) for s in STATS}
            else:
                stats = _grouped_intensity(values, starts, counts, group)
            for stat in STATS:
                cols_out[f"{channel}_{stat}"] = stats[stat]
    return cols_out


def _rows(cols: dict[str, np.ndarray], slice_index: int, objects: str | None) -> list[dict[str, Any]]:
    n = len(cols["label"])
    head: dict[str, Any] = {"slice_index": slice_index}
    if objects is not None:
        head["objects"] = objects
    names = list(cols)
    values = [cols[k].tolist() for k in names]
    return [{**head, **dict(zip(names, row, strict=True))} for row in zip(*values, strict=True)] if n else []


def _measure(labels: np.ndarray, selection: list[tuple[int, str | None]], intensity_for: Any,
             pixel_size_um: float | None, shape_features: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for z, objects in selection:
        cols = measure_plane(labels[z], intensity_for(z), pixel_size_um=pixel_size_um, shape_features=shape_features)
        rows.extend(_rows(cols, z, objects))
    return rows


def _intensity_source(stack: np.ndarray | None, intensity: Any, intensity_slices: Any, n_labels: int,
                      plane_shape: tuple[int, ...], name: str) -> Any:
    """A function ``z -> {name: 2-D image}`` giving the images measured inside label slice ``z``."""
    if intensity is None and intensity_slices is None:
        return lambda z: None
    if isinstance(intensity, Mapping):
        if intensity_slices is not None:
            raise ValueError(f"{name}: give intensity={{name: stack}} or intensity_slices=, not both")
        stacks = {}
        for key, value in intensity.items():
            value = np.asarray(value)
            if value.shape != (n_labels, *plane_shape):
                raise ValueError(f"{name}: intensity[{key!r}] has shape {value.shape}; it must match the label "
                                 f"stack {(n_labels, *plane_shape)}")
            stacks[str(key)] = value
        return lambda z: {k: v[z] for k, v in stacks.items()}
    named = _intensity_names(intensity_slices, name)
    source = np.asarray(intensity) if intensity is not None else stack
    if source is None:
        raise ValueError(f"{name}: intensity_slices needs an intensity stack")
    if source.ndim != 3 or tuple(source.shape[1:]) != tuple(plane_shape):
        raise ValueError(f"{name}: the intensity stack has shape {source.shape}; expected [C, *{plane_shape}]")
    picked = {k: source[_slice(v, source.shape[0], f"intensity_slices[{k!r}]", name)] for k, v in named.items()}
    return lambda z: picked


@special_outputs(("objects", materialize_parquet))
@numpy_func
def measure_objects(
    stack: np.ndarray,
    labels_slices: int | Sequence[int] | Mapping[str, int] | None = None,
    intensity_slices: Mapping[str, int] | None = None,
    intensity: Mapping[str, Any] | np.ndarray | None = None,
    pixel_size_um: float | None = None,
    shape_features: bool = True,
    connectivity: int = 1,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Measure every object (shape, position, intensities); the rows go to the ``objects`` table.

    ``stack`` holds the labels: every slice (default) or the slices ``labels_slices`` names
    (0-based positions). Intensities: ``intensity_slices={"GFP": 1}`` names slices of ``stack``
    (a channel-grouped ``[C, Y, X]`` field) or, with ``intensity=`` a ``[C, Y, X]`` array, of that
    array; ``intensity={"GFP": gfp_stack}`` gives stacks aligned slice by slice with the labels.
    ``pixel_size_um`` adds micrometre columns. Returns the stack unchanged and the rows (see the
    module documentation for the columns).
    """
    check_stack(stack, "measure_objects")
    stack = np.asarray(stack)
    pixel_size_um = _check_pixel_size(pixel_size_um, "measure_objects")
    connectivity = check_connectivity(connectivity, "measure_objects")
    selection = _label_selection(labels_slices, stack.shape[0], "measure_objects")
    if labels_slices is None and intensity is None and intensity_slices is not None:
        raise ValueError("measure_objects: intensity_slices of the stack itself need labels_slices= (which "
                         "slices are labels); to measure another stack pass intensity=")
    intensity_for = _intensity_source(stack, intensity, intensity_slices, stack.shape[0], stack.shape[1:],
                                      "measure_objects")
    labels = _labels_of(stack, selection, connectivity, "measure_objects")
    return stack, _measure(labels, selection, intensity_for, pixel_size_um, bool(shape_features))


def _labels_of(stack: np.ndarray, selection: list[tuple[int, str | None]], connectivity: int,
               name: str) -> dict[int, np.ndarray]:
    """The selected slices as label planes (a bool slice labelled, an integer slice as it is)."""
    out: dict[int, np.ndarray] = {}
    for z, _ in selection:
        if z not in out:
            out[z] = as_labels(stack[z:z + 1], name, connectivity)[0][0]
    return out


@special_outputs(("objects", materialize_parquet))
@special_inputs("labels")
@numpy_func
def measure_objects_with_labels(
    stack: np.ndarray,
    labels: Any = None,
    labels_slices: int | Sequence[int] | Mapping[str, int] | None = None,
    intensity_slices: Mapping[str, int] | None = None,
    pixel_size_um: float | None = None,
    shape_features: bool = True,
    connectivity: int = 1,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Measure the objects of the special input ``labels`` on this step's stack; rows go to ``objects``.

    ``labels`` is a ``[L, Y, X]`` label stack from an earlier step's special output ``labels``
    (same ``variable_components``). ``labels_slices`` picks (and may name) its slices;
    ``intensity_slices={"DAPI": 0, "GFP": 1}`` names the slices of ``stack`` to measure inside
    every object. Without ``intensity_slices``, label slice z is measured on slice z of the stack
    (shapes must match) under the name ``intensity``. Returns the stack unchanged and the rows.
    """
    name = "measure_objects_with_labels"
    check_stack(stack, name)
    stack = np.asarray(stack)
    if labels is None:
        raise ValueError(f"{name}: no labels: an earlier step must return the special output 'labels'")
    if not isinstance(labels, np.ndarray):
        from hcsgraph.config import MemoryType
        from hcsgraph.memory import convert_to

        labels = convert_to(labels, MemoryType.NUMPY)  # labels made on a GPU (torch, cupy, OpenCL)
    labels = np.asarray(labels)
    check_stack(labels, name)
    if tuple(labels.shape[1:]) != tuple(stack.shape[1:]):
        raise ValueError(f"{name}: labels of shape {labels.shape} do not match the stack {stack.shape}")
    pixel_size_um = _check_pixel_size(pixel_size_um, name)
    connectivity = check_connectivity(connectivity, name)
    selection = _label_selection(labels_slices, labels.shape[0], name)
    if intensity_slices is None:
        if labels.shape != stack.shape:
            raise ValueError(f"{name}: without intensity_slices the labels {labels.shape} must match the stack "
                             f"{stack.shape} slice by slice")
        intensity_for = _intensity_source(None, {"intensity": stack}, None, labels.shape[0], labels.shape[1:], name)
    else:
        intensity_for = _intensity_source(stack, None, intensity_slices, labels.shape[0], labels.shape[1:], name)
    planes = _labels_of(labels, selection, connectivity, name)
    return stack, _measure(planes, selection, intensity_for, pixel_size_um, bool(shape_features))


def with_materializers(func: Any, **materializers: Any) -> Any:
    """A copy of ``func`` whose special outputs use other materializers (``objects=table_materializer(...)``).

    The registered built-in is left as it is::

        measure = with_materializers(hf.get("measure_objects"), objects=table_materializer(plate="P07"))
    """
    declared = dict(getattr(func, "special_outputs", {}))
    unknown = sorted(set(materializers) - set(declared))
    if unknown:
        raise ValueError(f"with_materializers: {getattr(func, '__name__', func)!r} has no special output {unknown[0]!r}"
                         f" (it declares {sorted(declared)})")

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    wrapper.special_outputs = {**declared, **materializers}  # type: ignore[attr-defined]
    return wrapper
