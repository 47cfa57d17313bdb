"""Teach ``dask.sizeof`` the real size of torch, jax, tensorflow and OpenCL arrays.

Without this, dask sees a few dozen bytes per tensor and never spills them. Each registration is
lazy (``sizeof.register_lazy``): it runs when dask first measures an object of that library.
:func:`register` runs on ``import hcsgraph.memory``.
"""

from __future__ import annotations

from typing import Any

from dask.sizeof import sizeof


def _nbytes(obj: Any) -> int:
    return int(obj.nbytes)


def _register_torch() -> None:
    import torch

    @sizeof.register(torch.Tensor)
    def _sizeof_torch(tensor: Any) -> int:
        return int(tensor.element_size() * tensor.nelement())


def _register_jax() -> None:
    import jax

    sizeof.register(jax.Array)(_nbytes)


def _register_tensorflow() -> None:
    import tensorflow as tf

    @sizeof.register(tf.Tensor)
    @sizeof.register(tf.Variable)
    def _sizeof_tf(tensor: Any) -> int:
        return int(tensor.shape.num_elements() * tensor.dtype.size)


def _register_pyopencl() -> None:
    import pyopencl.array

    sizeof.register(pyopencl.array.Array)(_nbytes)


def _register_pyclesperanto() -> None:
    import pyclesperanto

    array_types = {getattr(pyclesperanto, "Array", None)}
    backend = getattr(pyclesperanto, "_array", None)
    if backend is not None:
        array_types.add(getattr(backend, "Array", None))
    try:  # the compiled array class of the OpenCL backend
        from pyclesperanto_opencl._pyclesperanto import _Array

        array_types.add(_Array)
    except ImportError:
        pass
    for cls in array_types - {None}:
        sizeof.register(cls)(_nbytes)


_LAZY = {
    "torch": _register_torch,
    "jax": _register_jax,
    "jaxlib": _register_jax,
    "tensorflow": _register_tensorflow,
    "pyopencl": _register_pyopencl,
    "pyclesperanto": _register_pyclesperanto,
    "pyclesperanto_opencl": _register_pyclesperanto,
}


def register() -> None:
    """Register the lazy ``dask.sizeof`` handlers (calling it again is harmless)."""
    for module, func in _LAZY.items():
        sizeof.register_lazy(module)(func)
