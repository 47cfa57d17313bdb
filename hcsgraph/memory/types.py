"""Detect the memory type of an array without importing any library."""

from __future__ import annotations

from typing import Any

from hcsgraph.config import MemoryType, coerce_enum

# Top-level module of a class in an array's MRO → memory type.
_MODULE_ROOTS: dict[str, MemoryType] = {
    "numpy": MemoryType.NUMPY,
    "cupy": MemoryType.CUPY,
    "torch": MemoryType.TORCH,
    "tensorflow": MemoryType.TENSORFLOW,
    "keras": MemoryType.TENSORFLOW,
    "jax": MemoryType.JAX,
    "jaxlib": MemoryType.JAX,
    "pyclesperanto": MemoryType.PYCLESPERANTO,
    "pyclesperanto_opencl": MemoryType.PYCLESPERANTO,
    "pyclesperanto_cuda": MemoryType.PYCLESPERANTO,
    "pyclesperanto_prototype": MemoryType.PYCLESPERANTO,
    "pyopencl": MemoryType.PYCLESPERANTO,
}
# Classes that are arrays (a library's scalars, dtypes and modules are not).
_ARRAY_CLASS_NAMES = {
    MemoryType.NUMPY: {"ndarray"},
    MemoryType.CUPY: {"ndarray"},
    MemoryType.TORCH: {"Tensor"},
    MemoryType.TENSORFLOW: {"Tensor", "Variable", "EagerTensor", "ResourceVariable"},
    MemoryType.JAX: {"Array", "ArrayImpl"},
    MemoryType.PYCLESPERANTO: {"Array", "_Array", "OCLArray"},
}


# Top-level module of a pyclesperanto array class → the package whose functions read it.
_CLE_PACKAGE_ROOTS = {
    "pyclesperanto": "pyclesperanto",
    "pyclesperanto_opencl": "pyclesperanto",
    "pyclesperanto_cuda": "pyclesperanto",
    "pyclesperanto_prototype": "pyclesperanto_prototype",
    "pyopencl": "pyclesperanto_prototype",  # the prototype's OCLArray is a pyopencl array
}


def as_memory_type(value: MemoryType | str) -> MemoryType:
    """Return ``value`` as a :class:`MemoryType`; accept the member or its string value."""
    return coerce_enum(MemoryType, value, "memory_type")


def memory_type_of(obj: Any) -> MemoryType:
    """The memory type of an array (numpy, cupy, torch, tensorflow, jax or pyclesperanto).

    Looks only at the class hierarchy of ``obj``, so it never imports a library.
    Raises ``TypeError`` naming the type for anything else.
    """
    for cls in type(obj).__mro__:
        root = (getattr(cls, "__module__", None) or "").partition(".")[0]
        memory_type = _MODULE_ROOTS.get(root)
        if memory_type is not None and cls.__name__ in _ARRAY_CLASS_NAMES[memory_type]:
            return memory_type
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    valid = ", ".join(m.value for m in MemoryType)
    raise TypeError(f"cannot tell the memory type of a {kind} object; expected an array of one of: {valid}")


def pyclesperanto_package_of(obj: Any) -> str | None:
    """``"pyclesperanto"`` or ``"pyclesperanto_prototype"``: the package an OpenCL array belongs to.

    None for anything that is not a pyclesperanto array. Like :func:`memory_type_of`, it looks
    only at the class hierarchy and imports nothing.
    """
    names = _ARRAY_CLASS_NAMES[MemoryType.PYCLESPERANTO]
    for cls in type(obj).__mro__:
        root = (getattr(cls, "__module__", None) or "").partition(".")[0]
        package = _CLE_PACKAGE_ROOTS.get(root)
        if package is not None and cls.__name__ in names:
            return package
    return None
