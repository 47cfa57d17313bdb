"""Which dtypes each memory type holds exactly, and each array's dtype as a numpy name.

hcsgraph never casts silently: converting an array whose dtype the target library cannot hold
is an error that names the dtype and the library.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from hcsgraph.config import MemoryType

_INTS = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
_FLOATS = {"float16", "float32", "float64"}
_COMPLEX = {"complex64", "complex128"}
_ALL = frozenset({"bool"} | _INTS | _FLOATS | _COMPLEX)
_X64 = frozenset({"int64", "uint64", "float64", "complex128"})

_STATIC: dict[MemoryType, frozenset[str]] = {
    MemoryType.NUMPY: _ALL,
    MemoryType.CUPY: _ALL,
    MemoryType.TORCH: _ALL,
    MemoryType.TENSORFLOW: _ALL,
    # jax without jax_enable_x64 holds no 64-bit types (it would cast them to 32 bits).
    MemoryType.JAX: _ALL - _X64,
}
_CLE = {
    # pyclesperanto >= 0.25 casts bool to uint8, int64 to int32 and float64 to float32.
    "pyclesperanto": frozenset({"int8", "int16", "int32", "uint8", "uint16", "uint32", "float32"}),
    # The prototype's buffers (its cl_buffer_datatype_dict, less float64 that it maps to float).
    "pyclesperanto_prototype": frozenset(_INTS | {"float32", "complex64"}),
}


def supported_dtypes(memory_type: MemoryType, package: str | None = None) -> frozenset[str]:
    """The numpy dtype names ``memory_type`` holds without changing a value.

    ``package``: for pyclesperanto, the package to ask about (default: the one hcsgraph uses).
    """
    memory_type = MemoryType(memory_type)
    if memory_type is MemoryType.PYCLESPERANTO:
        from hcsgraph.memory.libraries import normalize_pyclesperanto_package, pyclesperanto_module_name

        name = normalize_pyclesperanto_package(package) if package is not None else pyclesperanto_module_name()
        return _CLE.get(name or "pyclesperanto", _CLE["pyclesperanto"])
    if memory_type is MemoryType.JAX and "jax" in sys.modules:
        if sys.modules["jax"].config.read("jax_enable_x64"):
            return _ALL
    return _STATIC[memory_type]


def check_dtype_supported(memory_type: MemoryType, dtype: str, package: str | None = None) -> None:
    """Raise ``TypeError`` when ``memory_type`` (pyclesperanto: ``package``) cannot hold ``dtype`` exactly."""
    supported = supported_dtypes(memory_type, package)
    if dtype in supported:
        return
    hint = ""
    if MemoryType(memory_type) is MemoryType.PYCLESPERANTO and package is not None:
        from hcsgraph.memory.libraries import normalize_pyclesperanto_package

        hint = f" (arrays of {normalize_pyclesperanto_package(package)})"
    if memory_type is MemoryType.JAX and dtype in _X64:
        hint = " (enable 64-bit types with jax.config.update('jax_enable_x64', True))"
    raise TypeError(
        f"{MemoryType(memory_type).value} cannot hold dtype {dtype} without changing values{hint}; "
        f"supported: {', '.join(sorted(supported))}. Cast explicitly before this step."
    )


def dtype_name(data: Any) -> str:
    """The numpy name of an array's dtype, for any supported memory type."""
    dtype = data.dtype
    module = type(dtype).__module__.partition(".")[0]
    if module == "torch":
        return str(dtype).removeprefix("torch.")
    if module == "tensorflow":
        return np.dtype(dtype.as_numpy_dtype).name
    return np.dtype(dtype).name
