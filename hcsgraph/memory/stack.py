"""Stack 2D slices into a ``[Z, Y, X]`` array of any memory type, and split it back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hcsgraph.config import MemoryType
from hcsgraph.memory.convert import convert_to, to_host
from hcsgraph.memory.dtypes import dtype_name
from hcsgraph.memory.libraries import import_library
from hcsgraph.memory.types import as_memory_type, memory_type_of


def _stack_native(arrays: list[Any], memory_type: MemoryType, gpu_id: int | None) -> Any:
    """Stack arrays that are all of ``memory_type`` with that library's own stack."""
    if memory_type is MemoryType.NUMPY:
        return np.stack(arrays)
    if memory_type is MemoryType.PYCLESPERANTO:  # OpenCL arrays: one transfer of the whole stack
        return convert_to(np.stack([to_host(a) for a in arrays]), memory_type, gpu_id)
    library = import_library(memory_type)
    if memory_type is MemoryType.JAX:
        return library.numpy.stack(arrays)
    return library.stack(arrays)


def stack_slices(slices: Sequence[Any], memory_type: MemoryType | str, gpu_id: int | None = None) -> Any:
    """Stack 2D slices (any memory types, one shape and dtype) into a ``[Z, Y, X]`` array of ``memory_type``.

    Raises ``ValueError`` for an empty list, a slice that is not 2D or whose shape differs from the
    first, and ``TypeError`` for a slice whose dtype differs (nothing is cast).
    """
    memory_type = as_memory_type(memory_type)
    if isinstance(slices, (str, bytes)) or not isinstance(slices, Sequence):
        raise TypeError(f"stack_slices expects a list of 2D arrays, got {type(slices).__qualname__}")
    if len(slices) == 0:
        raise ValueError("stack_slices got an empty list of slices")
    first_shape, first_dtype = tuple(slices[0].shape), dtype_name(slices[0])
    for index, item in enumerate(slices):
        memory_type_of(item)  # TypeError naming the type of anything that is not an array
        shape = tuple(item.shape)
        if len(shape) != 2:
            raise ValueError(f"slice {index} has shape {shape}; stack_slices expects 2D slices [Y, X]")
        if shape != first_shape:
            raise ValueError(f"slice {index} has shape {shape}, but slice 0 has shape {first_shape}")
        if dtype_name(item) != first_dtype:
            raise TypeError(f"slice {index} has dtype {dtype_name(item)}, but slice 0 has dtype {first_dtype}")
    if all(memory_type_of(item) is MemoryType.NUMPY for item in slices):
        # One stack on the host, then a single transfer.
        return convert_to(np.stack(slices), memory_type, gpu_id)
    return _stack_native([convert_to(item, memory_type, gpu_id) for item in slices], memory_type, gpu_id)


def unstack_slices(
    array: Any, memory_type: MemoryType | str, gpu_id: int | None = None, validate_slices: bool = True
) -> list[Any]:
    """Split a ``[Z, Y, X]`` array (any memory type) into Z 2D slices of ``memory_type``.

    Raises ``ValueError`` naming the shape when ``array`` is not 3D.
    """
    memory_type = as_memory_type(memory_type)
    memory_type_of(array)
    shape = tuple(array.shape)
    if len(shape) != 3:
        raise ValueError(f"unstack_slices expects a 3D array [Z, Y, X], got shape {shape}")
    if memory_type is MemoryType.PYCLESPERANTO:
        host = to_host(array)
        slices = [convert_to(np.ascontiguousarray(plane), memory_type, gpu_id) for plane in host]
    else:
        converted = convert_to(array, memory_type, gpu_id)
        slices = [converted[index] for index in range(shape[0])]
    if validate_slices:
        for index, item in enumerate(slices):
            if tuple(item.shape) != shape[1:]:
                raise ValueError(f"slice {index} has shape {tuple(item.shape)}; expected {shape[1:]}")
    return slices
