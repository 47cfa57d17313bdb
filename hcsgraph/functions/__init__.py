"""Built-in processing functions, looked up by name and memory type.

Every function takes a ``[Z, Y, X]`` stack in its memory type and returns a ``[Z, Y, X]`` stack in
the same library (projections return ``[1, Y, X]``). Parameters are keyword arguments.

>>> import hcsgraph.functions as hf
>>> hf.list()                                   # what exists, per memory type
>>> blur = hf.get("gaussian_filter", "torch")   # one version
>>> hf.register("my_filter", my_filter)         # memory type from its decorator
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hcsgraph.config import MemoryType
from hcsgraph.functions import (
    filters,
    label,
    measure,
    morphology,
    objects,
    projection,
    segmentation,
    threshold,
)
from hcsgraph.functions.registry import FunctionRegistry, UnknownFunctionError, registry

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FunctionRegistry",
    "UnknownFunctionError",
    "available_memory_types",
    "get",
    "list",
    "register",
    "registry",
]

_BUILTINS: dict[str, tuple[Callable[..., Any], ...]] = {
    "gaussian_filter": (filters.gaussian_filter, filters.gaussian_filter_torch, filters.gaussian_filter_cle),
    "median_filter": (filters.median_filter, filters.median_filter_torch, filters.median_filter_cle),
    "background_subtract": (
        filters.background_subtract,
        filters.background_subtract_torch,
        filters.background_subtract_cle,
    ),
    "threshold_otsu": (threshold.threshold_otsu, threshold.threshold_otsu_torch, threshold.threshold_otsu_cle),
    "binary_opening": (morphology.binary_opening, morphology.binary_opening_torch, morphology.binary_opening_cle),
    "label": (label.label, label.label_cle),
    "max_projection": (projection.max_projection, projection.max_projection_torch, projection.max_projection_cle),
    "mean_projection": (
        projection.mean_projection,
        projection.mean_projection_torch,
        projection.mean_projection_cle,
    ),
    "count_cells": (measure.count_cells,),
    "threshold_local": (threshold.threshold_local, threshold.threshold_local_torch),
    "watershed": (segmentation.watershed,),
    "remove_small_objects": (
        segmentation.remove_small_objects,
        segmentation.remove_small_objects_torch,
        segmentation.remove_small_objects_cle,
    ),
    "remove_large_objects": (
        segmentation.remove_large_objects,
        segmentation.remove_large_objects_torch,
        segmentation.remove_large_objects_cle,
    ),
    "clear_border": (segmentation.clear_border, segmentation.clear_border_torch, segmentation.clear_border_cle),
    "fill_holes": (segmentation.fill_holes,),
    "expand_labels": (segmentation.expand_labels, segmentation.expand_labels_cle),
    "measure_objects": (objects.measure_objects,),
    "measure_objects_with_labels": (objects.measure_objects_with_labels,),
}


def _float_for_integers(dtype: Any) -> Any:
    """Mean projections: float32 for integer/bool input, the float dtype otherwise."""
    import numpy as np

    return dtype if np.issubdtype(np.dtype(dtype), np.floating) else np.dtype("float32")


# What each built-in returns, so that a pipeline's output dtype is known before it runs:
# name -> (output dtype rule for numpy/torch, rule for pyclesperanto).
_OUTPUT_DTYPES: dict[str, tuple[Any, Any]] = {
    "threshold_otsu": ("bool", "uint8"),
    "binary_opening": ("bool", "uint8"),
    "label": ("int32", "int32"),
    "mean_projection": (_float_for_integers, "float32"),
    "threshold_local": ("bool", "uint8"),
    "watershed": ("int32", "int32"),
    "expand_labels": (segmentation.labels_dtype, "same"),
}
_REDUCES_STACK = {"max_projection", "mean_projection"}
# Masks and labels: their pyramid levels are taken by nearest, never by mean (no invented labels).
_LABELS = {
    "threshold_otsu", "binary_opening", "label", "threshold_local", "watershed", "remove_small_objects",
    "remove_large_objects", "clear_border", "fill_holes", "expand_labels",
}

for _name, _versions in _BUILTINS.items():
    for _func in _versions:
        _numpy_rule, _cle_rule = _OUTPUT_DTYPES.get(_name, ("same", "same"))
        _is_cle = str(getattr(_func, "input_memory_type", "")) == "pyclesperanto"
        _func.output_dtype = _cle_rule if _is_cle else _numpy_rule
        _func.reduces_stack = _name in _REDUCES_STACK
        _func.image_kind = "labels" if _name in _LABELS else "intensity"
        registry.register(_name, _func)
del _name, _versions, _func, _numpy_rule, _cle_rule, _is_cle


def register(
    name: str,
    func: Callable[..., Any],
    memory_type: MemoryType | str | None = None,
    *,
    description: str | None = None,
    replace: bool = False,
) -> Callable[..., Any]:
    """Register ``func`` under ``name`` (memory type from its decorator unless given); returns ``func``."""
    return registry.register(name, func, memory_type, description=description, replace=replace)


def get(name: str, memory_type: MemoryType | str = MemoryType.NUMPY) -> Callable[..., Any]:
    """The ``memory_type`` version of the function ``name``; raises :class:`UnknownFunctionError`."""
    return registry.get(name, memory_type)


def available_memory_types(name: str) -> tuple[MemoryType, ...]:
    """The memory types the function ``name`` has a version for."""
    return registry.available_memory_types(name)


def list() -> pd.DataFrame:  # noqa: A001 - the documented name
    """A table of the registered functions: name, memory types, description, special outputs."""
    return registry.table()
