"""pyclesperanto building blocks shared by the OpenCL versions of the built-in functions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def cle_module() -> Any:
    """The ``pyclesperanto`` module (>= 0.25), with OpenCL started the way hcsgraph.memory does it."""
    from hcsgraph.config import MemoryType
    from hcsgraph.memory.libraries import import_library

    cle = import_library(MemoryType.PYCLESPERANTO)
    if cle.__name__ != "pyclesperanto":
        raise RuntimeError(
            f"the built-in pyclesperanto functions need pyclesperanto >= 0.25, but {cle.__name__} is in use; "
            "install the 'cle' extra or unset HCSGRAPH_PYCLESPERANTO"
        )
    return cle


def per_slice(func: Callable[[Any], Any], stack: Any, dtype: Any) -> Any:
    """Apply ``func`` to every Z plane of a device stack; the planes land in a new ``dtype`` stack."""
    cle = cle_module()
    out = cle.create(tuple(stack.shape), dtype=dtype)
    for z in range(stack.shape[0]):
        cle.paste(func(stack[z]), out, destination_x=0, destination_y=0, destination_z=z)
    return out


def footprint_array(footprint: np.ndarray) -> Any:
    """A 2-D flat footprint as a ``[1, Y, X]`` device array (planes are filtered one by one)."""
    return cle_module().push(np.asarray(footprint, dtype=np.uint8)[np.newaxis])


def cast(array: Any, dtype: Any) -> Any:
    """``array`` copied into a new device array of ``dtype`` (values converted, not rescaled)."""
    cle = cle_module()
    if np.dtype(array.dtype) == np.dtype(dtype):
        return array
    out = cle.create(tuple(array.shape), dtype=dtype)
    cle.copy(array, out)
    return out
