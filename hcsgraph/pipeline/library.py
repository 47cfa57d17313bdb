"""Functions by name for pipelines: pick the version for a step's memory type, and CPU twins.

``resolve_function("gaussian_filter", "torch")`` returns the torch version; ``cpu_version`` gives
the numpy version of a named function (or of any registered version of it), which out-of-memory
recovery and GPU-less runs of cupy steps fall back to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hcsgraph.functions  # noqa: F401  (registers the built-in functions)
from hcsgraph.config import MemoryType, coerce_enum
from hcsgraph.functions.registry import UnknownFunctionError, registry

__all__ = ["UnknownFunctionError", "cpu_version", "resolve_function"]


def resolve_function(name: str, memory_type: MemoryType | str = MemoryType.NUMPY) -> Callable[..., Any]:
    """The ``memory_type`` version of the library function ``name``.

    Raises :class:`UnknownFunctionError` (a ``KeyError``) naming the function, with close names,
    or listing the memory types it does have.
    """
    return registry.get(name, coerce_enum(MemoryType, memory_type, "memory_type"))


def cpu_version(name_or_func: str | Callable[..., Any]) -> Callable[..., Any] | None:
    """The numpy version of a library function given by name or by any of its versions.

    Returns None for a function that is not in the library or has no numpy version; a function
    that is itself numpy-typed is returned as it is. An unknown name raises
    :class:`UnknownFunctionError`.
    """
    if isinstance(name_or_func, str):
        name = name_or_func
    else:
        if getattr(name_or_func, "input_memory_type", None) == MemoryType.NUMPY:
            return name_or_func
        found = registry.name_of(name_or_func)
        if found is None:
            return None
        name = found
    if MemoryType.NUMPY not in registry.available_memory_types(name):
        return None
    return registry.get(name, MemoryType.NUMPY)
