"""Recognise each framework's out-of-memory error and recover from it.

:func:`run_with_oom_recovery` runs a step's function on a ``[Z, Y, X]`` stack. When the GPU runs
out of memory it tries, in order:

1. ``retry``: free that framework's cached GPU memory and run again;
2. ``split``: run on halves of the stack along Z, recursively down to single slices, and
   concatenate the results (see *Splitting* below);
3. ``cpu_fallback``: run ``cpu_func`` on a host copy of the stack;
4. raise :class:`GPUOutOfMemoryError` naming the step, the well and the bytes asked for.

Each recovery attempted is returned as a :class:`Recovery` (the last one is the one that
worked); :func:`summarize_recoveries` counts them by framework and action for the run report.

Splitting
    Only for ``splittable`` functions: functions that treat each Z slice on its own. A function
    mixing slices (3D filters, projections) must be run with ``splittable=False``. A split is
    kept only when every piece returns a single array whose first axis has one entry per input
    slice; the pieces are concatenated with their own library (numpy, cupy, torch, jax,
    tensorflow, pyclesperanto; other types through a host round trip). A piece returning anything else
    (a tuple with special outputs, a reduced array) abandons the split and recovery goes on
    with the CPU fallback.

CPU fallback
    The stack is moved to the host first: torch, jax and tensorflow data stay in their library
    on its CPU device (``cpu_func`` runs under jax's / tensorflow's CPU device scope); cupy and
    OpenCL data become numpy arrays (pass the numpy twin as ``cpu_func``). The result is
    returned as ``cpu_func`` produced it, on the host.
"""

from __future__ import annotations

import logging
import re
import sys
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from hcsgraph.config import MemoryType

logger = logging.getLogger("hcsgraph.gpu")

OOM_KINDS = ("torch", "cupy", "tensorflow", "jax", "opencl")
RECOVERY_ACTIONS = ("retry", "split", "cpu_fallback")

# The framework whose cache is freed for each kind of OOM.
_KIND_MEMORY_TYPE = {
    "torch": MemoryType.TORCH,
    "cupy": MemoryType.CUPY,
    "tensorflow": MemoryType.TENSORFLOW,
    "jax": MemoryType.JAX,
    "opencl": MemoryType.PYCLESPERANTO,
}
_OPENCL_MEM_OBJECT_ALLOCATION_FAILURE = -4


@dataclass(frozen=True)
class Recovery:
    """One out-of-memory recovery: the framework that ran out (``kind``) and what was done."""

    kind: str
    action: str
    step: str = ""
    well: str = ""
    detail: str = ""


class GPUOutOfMemoryError(MemoryError):
    """A step ran out of GPU memory and every recovery failed."""

    def __init__(
        self, step: str, well: str, requested_bytes: int | None, kind: str, detail: str = ""
    ) -> None:
        self.step = step
        self.well = well
        self.requested_bytes = requested_bytes
        self.kind = kind
        self.detail = detail
        asked = "an unknown number of bytes" if requested_bytes is None else f"{requested_bytes} bytes"
        message = (
            f"step {step!r}, well {well!r}: out of {kind} GPU memory while asking for {asked}; "
            "freeing the cache and retrying, splitting the stack along Z"
            " and the CPU fallback did not help or were not allowed"
        )
        if detail:
            message += f" ({detail})"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.step, self.well, self.requested_bytes, self.kind, self.detail))


def _module_attr(module: str, *names: str) -> type | None:
    """``module.names...`` when ``module`` is already imported; never imports anything."""
    obj: Any = sys.modules.get(module)
    for name in names:
        if obj is None:
            return None
        obj = getattr(obj, name, None)
    return obj if isinstance(obj, type) else None


def _classify(exc: BaseException) -> str | None:
    message = str(exc)
    torch_oom = _module_attr("torch", "OutOfMemoryError") or _module_attr("torch", "cuda", "OutOfMemoryError")
    if torch_oom is not None and isinstance(exc, torch_oom):
        return "torch"
    if "torch" in sys.modules and isinstance(exc, RuntimeError) and "CUDA out of memory" in message:
        return "torch"  # torch before 1.13 raised a plain RuntimeError
    cupy_oom = _module_attr("cupy.cuda.memory", "OutOfMemoryError")
    if cupy_oom is not None and isinstance(exc, cupy_oom):
        return "cupy"
    cuda_runtime_error = _module_attr("cupy_backends.cuda.api.runtime", "CUDARuntimeError")
    if (
        cuda_runtime_error is not None
        and isinstance(exc, cuda_runtime_error)
        and "cudaErrorMemoryAllocation" in message
    ):
        return "cupy"
    tf_oom = _module_attr("tensorflow.python.framework.errors_impl", "ResourceExhaustedError")
    if tf_oom is not None and isinstance(exc, tf_oom):
        return "tensorflow"
    if "RESOURCE_EXHAUSTED" in message:
        jax_errors = (
            _module_attr("jax.errors", "JaxRuntimeError"),
            _module_attr("jaxlib.xla_extension", "XlaRuntimeError"),
            _module_attr("jaxlib._jax", "XlaRuntimeError"),
        )
        if any(cls is not None and isinstance(exc, cls) for cls in jax_errors):
            return "jax"
    cl_error = _module_attr("pyopencl._cl", "Error")
    if cl_error is not None and isinstance(exc, cl_error):
        if (
            getattr(exc, "code", None) == _OPENCL_MEM_OBJECT_ALLOCATION_FAILURE
            or "MEM_OBJECT_ALLOCATION_FAILURE" in message
        ):
            return "opencl"
    if isinstance(exc, RuntimeError) and "MEM_OBJECT_ALLOCATION_FAILURE" in message:
        return "opencl"  # pyclesperanto's own OpenCL backend
    return None


def is_oom_error(exc: BaseException) -> str | None:
    """The framework that ran out of GPU memory (``"torch"``, ``"cupy"``, ``"tensorflow"``, ``"jax"``,
    ``"opencl"``), or None when ``exc`` is not an out-of-memory error.

    Looks at the exception and the exceptions it was raised from. Detection uses only the
    libraries already imported.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        kind = _classify(current)
        if kind is not None:
            return kind
        current = current.__cause__
    return None


_UNITS = {
    "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "pb": 1e15,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50,
}  # fmt: skip
_ALLOCATE = re.compile(
    r"(?:tried to allocate|allocating|allocate)\s+([\d.,]+)\s*([kmgtp]?i?b|bytes?)\b", re.IGNORECASE
)
_TF_SHAPE = re.compile(r"tensor with shape\s*\[([\d,\s]*)\]\s*and type\s+(\w+)", re.IGNORECASE)
_TF_DTYPE_BYTES = {
    "float": 4, "double": 8, "half": 2, "bfloat16": 2, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2,
    "int32": 4, "uint32": 4, "int64": 8, "uint64": 8, "bool": 1, "complex64": 8, "complex128": 16,
}  # fmt: skip


def requested_bytes(exc: BaseException) -> int | None:
    """The allocation size an out-of-memory message reports, or None when it names none."""
    message = str(exc)
    match = _ALLOCATE.search(message)
    if match:
        unit = match.group(2).lower()
        factor = 1 if unit.startswith("byte") else _UNITS.get(unit, 1)
        return int(float(match.group(1).replace(",", "")) * factor)
    match = _TF_SHAPE.search(message)
    if match and match.group(2).lower() in _TF_DTYPE_BYTES:
        count = 1
        for dim in filter(None, (d.strip() for d in match.group(1).split(","))):
            count *= int(dim)
        return count * _TF_DTYPE_BYTES[match.group(2).lower()]
    return None


def array_nbytes(data: Any) -> int | None:
    """Bytes held by an array of any supported library, or None when unknown."""
    if hasattr(data, "element_size") and hasattr(data, "numel"):  # torch
        return int(data.element_size() * data.numel())
    nbytes = getattr(data, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    shape, dtype = getattr(data, "shape", None), getattr(data, "dtype", None)
    size = getattr(dtype, "size", None) or getattr(dtype, "itemsize", None)  # tensorflow: dtype.size
    if shape is not None and isinstance(size, int):
        count = 1
        for dim in shape:
            count *= int(dim)
        return count * size
    return None


def summarize_recoveries(recoveries: list[Recovery]) -> dict[str, dict[str, int]]:
    """Count recoveries by framework and action: ``{"torch": {"retry": 2, "split": 1}}``."""
    counts = Counter((r.kind, r.action) for r in recoveries)
    summary: dict[str, dict[str, int]] = {}
    for (kind, action), n in sorted(counts.items()):
        summary.setdefault(kind, {})[action] = n
    return summary


def free_framework_cache(kind: str, device_id: int | None = None) -> None:
    """Free the cached GPU memory of the framework behind an OOM of ``kind``."""
    try:
        from hcsgraph.gpu.cleanup import cleanup_gpu_memory_by_framework
    except ImportError:
        logger.debug("hcsgraph.gpu.cleanup is not available; not freeing the %s cache", kind)
        return
    try:
        cleanup_gpu_memory_by_framework(_KIND_MEMORY_TYPE.get(kind, kind), device_id)
    except Exception as exc:  # noqa: BLE001 - a failed cleanup must not hide the OOM being handled
        logger.warning("freeing the %s GPU cache failed: %s", kind, exc)


class _SplitAbandoned(Exception):
    """Splitting cannot produce the function's result."""


@dataclass(frozen=True)
class _OOMSeen:
    """What is kept of an out-of-memory error: not the exception, whose traceback would keep the
    failed attempt's GPU arrays alive during the next one."""

    kind: str
    error: str
    requested_bytes: int | None

    @classmethod
    def of(cls, exc: BaseException) -> _OOMSeen | None:
        kind = is_oom_error(exc)
        if kind is None:
            return None
        return cls(kind, f"{type(exc).__name__}: {str(exc)[:300]}", requested_bytes(exc))


class _StillOutOfMemory(Exception):
    def __init__(self, seen: _OOMSeen) -> None:
        super().__init__(seen.kind)
        self.seen = seen


def _library(data: Any) -> str:
    return type(data).__module__.split(".")[0]


def _concatenate(parts: list[Any], memory_type: MemoryType) -> Any:
    """Concatenate arrays along the first axis in their own library."""
    lib = _library(parts[0])
    if lib == "numpy":
        import numpy

        return numpy.concatenate(parts, axis=0)
    if lib == "cupy":
        import cupy

        return cupy.concatenate(parts, axis=0)
    if lib == "torch":
        import torch

        return torch.cat(parts, dim=0)
    if lib in ("jax", "jaxlib"):
        import jax.numpy as jnp

        return jnp.concatenate(parts, axis=0)
    if lib == "tensorflow":
        import tensorflow as tf

        return tf.concat(parts, axis=0)
    if lib.startswith("pyclesperanto") and "prototype" not in lib:
        import pyclesperanto as cle

        result = parts[0]
        for part in parts[1:]:
            result = cle.concatenate_along_z(result, part)
        return result
    import numpy

    from hcsgraph.memory import convert_memory

    host = [convert_memory(p, memory_type, MemoryType.NUMPY) for p in parts]
    return convert_memory(numpy.concatenate(host, axis=0), MemoryType.NUMPY, memory_type)


def _is_array(data: Any) -> bool:
    return not isinstance(data, tuple | list | dict) and getattr(data, "shape", None) is not None


def _z_size(stack: Any) -> int:
    shape = getattr(stack, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) >= 3 else 1


def _split_apply(
    func: Callable[..., Any],
    stack: Any,
    kwargs: dict[str, Any],
    memory_type: MemoryType,
    device_id: int | None,
) -> tuple[Any, int]:
    """Run ``func`` on halves of ``stack`` (recursively on OOM); returns (result, number of pieces)."""
    z = _z_size(stack)
    mid = z // 2
    results = []
    pieces = 0
    for piece in (stack[:mid], stack[mid:]):
        n = _z_size(piece)
        seen = None
        try:
            result = func(piece, **kwargs)
            pieces += 1
        except Exception as exc:
            seen = _OOMSeen.of(exc)
            if seen is None:
                raise
        if seen is not None:  # handled here, outside the except block, so the failed attempt is freed
            free_framework_cache(seen.kind, device_id)
            if n <= 1:
                raise _StillOutOfMemory(seen)
            result, sub = _split_apply(func, piece, kwargs, memory_type, device_id)
            pieces += sub
        shape = getattr(result, "shape", None)
        if not _is_array(result) or len(shape) < 1 or int(shape[0]) != n:
            raise _SplitAbandoned(
                f"a piece of {n} slice(s) returned {type(result).__name__}"
                + (f" of shape {tuple(shape)}" if shape is not None else "")
                + ", not one result per slice"
            )
        results.append(result)
    return _concatenate(results, memory_type), pieces


def _to_host(stack: Any, memory_type: MemoryType) -> Any:
    """The stack on the host: torch/jax/tensorflow on their CPU device, anything else as numpy."""
    lib = _library(stack)
    if lib == "numpy":
        return stack
    if lib == "torch":
        return stack.cpu()
    if lib in ("jax", "jaxlib"):
        import jax

        return jax.device_put(stack, jax.devices("cpu")[0])
    if lib == "tensorflow":
        import tensorflow as tf

        with tf.device("/CPU:0"):
            return tf.identity(stack)
    if hasattr(stack, "get"):  # cupy, pyopencl and pyclesperanto arrays
        return stack.get()
    from hcsgraph.memory import convert_memory

    return convert_memory(stack, memory_type, MemoryType.NUMPY)


def _cpu_scope(memory_type: MemoryType) -> Any:
    if memory_type is MemoryType.JAX:
        import jax

        return jax.default_device(jax.devices("cpu")[0])
    if memory_type is MemoryType.TENSORFLOW:
        import tensorflow as tf

        return tf.device("/CPU:0")
    return nullcontext()


def run_with_oom_recovery(
    func: Callable[..., Any],
    stack: Any,
    kwargs: dict[str, Any],
    *,
    step: str,
    well: str,
    memory_type: MemoryType | str,
    cpu_func: Callable[..., Any] | None = None,
    splittable: bool = True,
    device_id: int | None = None,
) -> tuple[Any, list[Recovery]]:
    """Run ``func(stack, **kwargs)``, recovering from GPU out-of-memory errors (see the module doc).

    Returns ``(result, recoveries)``: the recoveries attempted, in order (the last one worked);
    empty when nothing ran out of memory.
    Errors other than out-of-memory propagate unchanged. Raises :class:`GPUOutOfMemoryError`
    when every allowed recovery failed.
    """
    memory_type = MemoryType(memory_type)
    if device_id is None:
        from hcsgraph.gpu.devices import current_device

        device_id = current_device()
    seen: _OOMSeen | None = None
    try:
        return func(stack, **kwargs), []
    except Exception as exc:
        seen = _OOMSeen.of(exc)
        if seen is None:
            raise
    kind = seen.kind
    recoveries: list[Recovery] = []

    def note(action: str, detail: str = "") -> None:
        recoveries.append(Recovery(kind, action, step, well, detail))
        logger.info("step %r, well %r: out of %s GPU memory; %s %s", step, well, kind, action, detail)

    # 1. free the framework's cache and retry
    free_framework_cache(kind, device_id)
    note("retry")
    try:
        return func(stack, **kwargs), recoveries
    except Exception as exc:
        seen = _OOMSeen.of(exc)
        if seen is None:
            raise
    kind = seen.kind
    free_framework_cache(kind, device_id)

    # 2. split along Z
    z = _z_size(stack)
    why_not = ""
    if splittable and z > 1:
        try:
            result, pieces = _split_apply(func, stack, kwargs, memory_type, device_id)
            note("split", f"{z} slices in {pieces} pieces")
            return result, recoveries
        except _StillOutOfMemory as still:
            seen = still.seen
            kind = seen.kind
            why_not = "a single slice does not fit"
        except _SplitAbandoned as abandoned:
            why_not = f"splitting abandoned: {abandoned}"
        note("split", f"failed: {why_not}")
        free_framework_cache(kind, device_id)
    elif not splittable:
        why_not = "the step cannot be split along Z"
    else:
        why_not = "a single slice does not fit"

    # 3. CPU fallback
    if cpu_func is not None:
        host = _to_host(stack, memory_type)
        with _cpu_scope(memory_type):
            result = cpu_func(host, **kwargs)
        note("cpu_fallback")
        return result, recoveries

    # 4. give up (not chained: some frameworks' errors, OpenCL's, cannot travel to the client)
    asked = seen.requested_bytes if seen.requested_bytes is not None else array_nbytes(stack)
    detail = f"{why_not}; no CPU fallback; last error: {seen.error}"
    raise GPUOutOfMemoryError(step, well, asked, kind, detail) from None
