"""Convert arrays between memory types, exactly.

The conversion table maps each ``(source, target)`` pair to an ordered list of methods:

1. ``dlpack``: zero-copy where both libraries sit on the same device;
2. ``cuda_array_interface``: for CUDA arrays (cupy, torch);
3. ``host``: a round trip through a numpy array in host memory.

:func:`convert_memory` tries them in that order and returns the first result;
:func:`convert_memory_with_method` also says which method produced it (``convert_memory`` logs
it at DEBUG level). A library's conversions join the table the first time a conversion needs
them, following dask's ``Dispatch.register_lazy``; nothing is imported before a conversion runs.

A result always has the source's values, dtype and shape; a dtype that the target cannot hold
is a :class:`MemoryConversionError`, never a cast.

``gpu_id=None`` keeps data where it is: CUDA data stays on its GPU, host data stays on the CPU.
With a ``gpu_id``, the result is placed on that CUDA device when the target library has one;
CPU-capable libraries keep the data on the CPU on a machine without one.

pyclesperanto: ``MemoryType.PYCLESPERANTO`` covers the arrays of both ``pyclesperanto`` (>= 0.25)
and ``pyclesperanto_prototype``; conversions *to* it make arrays of the package hcsgraph uses
(:func:`~hcsgraph.memory.libraries.pyclesperanto_module_name`). The two packages' functions do not
read each other's arrays reliably (the prototype rejects ``pyclesperanto`` arrays), so
``convert_to(data, "pyclesperanto", package=...)`` / :func:`to_pyclesperanto_package` makes an
array of a named package, copying through host memory when ``data`` belongs to the other one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from hcsgraph.config import MemoryType
from hcsgraph.memory.dtypes import check_dtype_supported, dtype_name
from hcsgraph.memory.libraries import (
    MissingLibraryError,
    import_library,
    import_pyclesperanto,
    resolve_pyclesperanto_package,
)
from hcsgraph.memory.types import as_memory_type, memory_type_of, pyclesperanto_package_of

log = logging.getLogger(__name__)


class ConversionMethod(str, Enum):  # noqa: UP042 - same style as hcsgraph.config
    """How a conversion moved the data."""

    NOOP = "noop"  # source and target types are the same
    DLPACK = "dlpack"
    CUDA_ARRAY_INTERFACE = "cuda_array_interface"
    HOST = "host"


METHOD_ORDER = (ConversionMethod.DLPACK, ConversionMethod.CUDA_ARRAY_INTERFACE, ConversionMethod.HOST)


class MemoryConversionError(RuntimeError):
    """A conversion between two memory types failed."""

    def __init__(self, source_type: Any, target_type: Any, method: Any, reason: str) -> None:
        self.source_type = getattr(source_type, "value", source_type)
        self.target_type = getattr(target_type, "value", target_type)
        self.method = getattr(method, "value", method)
        self.reason = reason
        super().__init__(
            f"cannot convert {self.source_type} → {self.target_type} via {self.method}: {reason}"
        )

    def __reduce__(self):  # keep the four attributes across pickling (dask workers)
        return (type(self), (self.source_type, self.target_type, self.method, self.reason))


Converter = Callable[[Any, "int | None"], Any]


class ConversionRegistry:
    """``(source, target) → {method: converter}``, filled lazily per library."""

    def __init__(self) -> None:
        self._table: dict[tuple[MemoryType, MemoryType], dict[ConversionMethod, Converter]] = {}
        self._lazy: dict[MemoryType, Callable[[], None]] = {}
        self._lock = threading.RLock()

    def register(self, source: MemoryType, target: MemoryType, method: ConversionMethod, func: Converter) -> None:
        """Add ``func(data, gpu_id) -> converted`` for ``source → target`` by ``method``."""
        with self._lock:
            self._table.setdefault((source, target), {})[ConversionMethod(method)] = func

    def register_lazy(self, memory_type: MemoryType) -> Callable[[Callable[[], None]], Callable[[], None]]:
        """Decorator: run the decorated function once, before the first lookup involving ``memory_type``."""

        def wrapper(func: Callable[[], None]) -> Callable[[], None]:
            self._lazy[memory_type] = func
            return func

        return wrapper

    def _load(self, *memory_types: MemoryType) -> None:
        with self._lock:
            for memory_type in memory_types:
                register = self._lazy.pop(memory_type, None)
                if register is not None:
                    register()

    def methods(self, source: MemoryType, target: MemoryType) -> list[tuple[ConversionMethod, Converter]]:
        """The converters for a pair, in the order they are tried."""
        self._load(source, target)
        entry = self._table.get((source, target), {})
        return [(method, entry[method]) for method in METHOD_ORDER if method in entry]

    def pairs(self) -> Iterator[tuple[MemoryType, MemoryType, list[ConversionMethod]]]:
        """Every registered pair with its methods, in :class:`MemoryType` order."""
        self._load(*MemoryType)
        for source in MemoryType:
            for target in MemoryType:
                if source is not target:
                    yield source, target, [method for method, _ in self.methods(source, target)]


conversions = ConversionRegistry()


# --------------------------------------------------------------------------------------------
# Per-library adapters: host transfers, DLPack import, device placement.


@dataclass(frozen=True)
class Adapter:
    """What the conversion table needs to know about one library."""

    to_host: Callable[[Any], np.ndarray]
    from_host: Callable[[np.ndarray, int | None], Any]
    place: Callable[[Any, int | None], Any]
    gpu_index: Callable[[Any], int | None]
    from_dlpack: Callable[[Any, int | None], Any] | None = None
    from_cuda_array_interface: Callable[[Any, int | None], Any] | None = None


def _host_ready(array: np.ndarray) -> np.ndarray:
    """A writable, native-byte-order, C-contiguous view or copy with the same values."""
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if not array.flags.c_contiguous or not array.flags.writeable:
        array = np.array(array, order="C", copy=True)
    return array


# numpy ----------------------------------------------------------------------------------------


def _identity(data: Any, gpu_id: int | None = None) -> Any:
    return data


def _no_gpu(data: Any) -> None:
    return None


def _numpy_from_dlpack(data: Any, gpu_id: int | None) -> np.ndarray:
    return np.from_dlpack(data)


# torch ----------------------------------------------------------------------------------------


def _torch_device(torch: Any, gpu_id: int | None) -> Any:
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device("cuda", gpu_id)
    return None


def _torch_place(data: Any, gpu_id: int | None) -> Any:
    device = _torch_device(import_library(MemoryType.TORCH), gpu_id)
    return data if device is None or data.device == device else data.to(device)


def _torch_to_host(data: Any) -> np.ndarray:
    return data.detach().cpu().resolve_conj().resolve_neg().numpy()


def _torch_from_host(array: np.ndarray, gpu_id: int | None) -> Any:
    torch = import_library(MemoryType.TORCH)
    return _torch_place(torch.from_numpy(_host_ready(array)), gpu_id)


def _torch_from_dlpack(data: Any, gpu_id: int | None) -> Any:
    torch = import_library(MemoryType.TORCH)
    if any(stride < 0 for stride in getattr(data, "strides", None) or ()):
        # torch aborts the process on negative DLPack strides instead of raising.
        raise BufferError("torch cannot import negative strides through DLPack")
    return _torch_place(torch.from_dlpack(data), gpu_id)


def _torch_from_cai(data: Any, gpu_id: int | None) -> Any:
    torch = import_library(MemoryType.TORCH)
    index = gpu_id if gpu_id is not None else data.device.id
    return torch.as_tensor(data, device=torch.device("cuda", index))


def _torch_gpu_index(data: Any) -> int | None:
    return data.device.index if data.device.type == "cuda" else None


# jax ------------------------------------------------------------------------------------------


def _jax_device(jax: Any, gpu_id: int | None) -> Any:
    if gpu_id is not None:
        try:
            return jax.devices("gpu")[gpu_id]
        except (RuntimeError, IndexError):
            pass
    return None


def _jax_place(data: Any, gpu_id: int | None) -> Any:
    jax = import_library(MemoryType.JAX)
    device = _jax_device(jax, gpu_id)
    return data if device is None or device in data.devices() else jax.device_put(data, device)


def _jax_from_host(array: np.ndarray, gpu_id: int | None) -> Any:
    jax = import_library(MemoryType.JAX)
    device = _jax_device(jax, gpu_id) or jax.devices("cpu")[0]
    return jax.device_put(_host_ready(array), device)


def _jax_from_dlpack(data: Any, gpu_id: int | None) -> Any:
    jax = import_library(MemoryType.JAX)
    return _jax_place(jax.dlpack.from_dlpack(data), gpu_id)


def _jax_gpu_index(data: Any) -> int | None:
    device = next(iter(data.devices()))
    return device.id if device.platform in ("gpu", "cuda", "rocm") else None


# tensorflow -----------------------------------------------------------------------------------


def _tf_device_name(tf: Any, gpu_id: int | None) -> str:
    if gpu_id is not None and tf.config.list_physical_devices("GPU"):
        return f"/GPU:{gpu_id}"
    return "/CPU:0"


def _tf_place(data: Any, gpu_id: int | None) -> Any:
    tf = import_library(MemoryType.TENSORFLOW)
    name = _tf_device_name(tf, gpu_id)
    if gpu_id is None or name == "/CPU:0" or data.device.endswith(name.replace("/", "device:")):
        return data
    with tf.device(name):
        return tf.identity(data)


def _tf_from_host(array: np.ndarray, gpu_id: int | None) -> Any:
    tf = import_library(MemoryType.TENSORFLOW)
    with tf.device(_tf_device_name(tf, gpu_id)):
        return tf.convert_to_tensor(_host_ready(array))


_TF_ALIGNMENT = 64  # TensorFlow aborts the process on a less aligned DLPack buffer


def _buffer_pointer(data: Any) -> int | None:
    """Address of an array's first element, for the libraries that export DLPack."""
    if isinstance(data, np.ndarray):
        return data.ctypes.data
    for name in ("data_ptr", "unsafe_buffer_pointer"):  # torch, jax
        if callable(getattr(data, name, None)):
            return int(getattr(data, name)())
    pointer = getattr(getattr(data, "data", None), "ptr", None)  # cupy
    return int(pointer) if pointer is not None else None


def _tf_from_dlpack(data: Any, gpu_id: int | None) -> Any:
    # TensorFlow takes a DLPack capsule only: ask the producer for one.
    tf = import_library(MemoryType.TENSORFLOW)
    pointer = _buffer_pointer(data)
    if pointer is None or pointer % _TF_ALIGNMENT:
        raise BufferError(f"TensorFlow needs {_TF_ALIGNMENT}-byte aligned DLPack buffers")
    return _tf_place(tf.experimental.dlpack.from_dlpack(data.__dlpack__()), gpu_id)


def _tf_gpu_index(data: Any) -> int | None:
    device = getattr(data, "device", "") or ""
    if "GPU:" in device:
        return int(device.rsplit("GPU:", 1)[1])
    return None


def _tf_to_host(data: Any) -> np.ndarray:
    return data.numpy()


# cupy -----------------------------------------------------------------------------------------


def _cupy() -> Any:
    cupy = import_library(MemoryType.CUPY)
    try:
        available = cupy.cuda.is_available()
    except Exception:  # noqa: BLE001 - a broken driver reads as no device
        available = False
    if not available:
        raise RuntimeError("cupy is installed but no CUDA device or driver is available")
    return cupy


def _cupy_place(data: Any, gpu_id: int | None) -> Any:
    if gpu_id is None or data.device.id == gpu_id:
        return data
    cupy = _cupy()
    with cupy.cuda.Device(gpu_id):
        return cupy.array(data, copy=True)


def _cupy_from_host(array: np.ndarray, gpu_id: int | None) -> Any:
    cupy = _cupy()
    with cupy.cuda.Device(gpu_id or 0):
        return cupy.asarray(_host_ready(array))


def _cupy_from_dlpack(data: Any, gpu_id: int | None) -> Any:
    cupy = _cupy()
    return _cupy_place(cupy.from_dlpack(data), gpu_id)


def _cupy_from_cai(data: Any, gpu_id: int | None) -> Any:
    cupy = _cupy()
    data.__cuda_array_interface__  # noqa: B018 - raises for host data: try the next method
    return _cupy_place(cupy.asarray(data), gpu_id)


def _cupy_to_host(data: Any) -> np.ndarray:
    return data.get()


def _cupy_gpu_index(data: Any) -> int | None:
    return data.device.id


# pyclesperanto --------------------------------------------------------------------------------


def _cle_from_host(array: np.ndarray, gpu_id: int | None, package: str | None = None) -> Any:
    cle = import_pyclesperanto(package)
    array = _host_ready(array)
    if cle.__name__ == "pyclesperanto_prototype":
        if gpu_id is not None:
            cle.select_device(device_index=gpu_id)
        from pyclesperanto_prototype._tier0._pycl import OCLArray

        return OCLArray.from_array(array)
    device = cle.select_device(gpu_id) if gpu_id is not None else None
    return cle.push(array, dtype=array.dtype, device=device)


def _cle_to_host(data: Any) -> np.ndarray:
    return data.get()


ADAPTERS: dict[MemoryType, Adapter] = {
    MemoryType.NUMPY: Adapter(_identity, _identity, _identity, _no_gpu, _numpy_from_dlpack),
    MemoryType.TORCH: Adapter(
        _torch_to_host, _torch_from_host, _torch_place, _torch_gpu_index, _torch_from_dlpack, _torch_from_cai
    ),
    MemoryType.JAX: Adapter(np.asarray, _jax_from_host, _jax_place, _jax_gpu_index, _jax_from_dlpack),
    MemoryType.TENSORFLOW: Adapter(_tf_to_host, _tf_from_host, _tf_place, _tf_gpu_index, _tf_from_dlpack),
    MemoryType.CUPY: Adapter(
        _cupy_to_host, _cupy_from_host, _cupy_place, _cupy_gpu_index, _cupy_from_dlpack, _cupy_from_cai
    ),
    MemoryType.PYCLESPERANTO: Adapter(_cle_to_host, _cle_from_host, _identity, _no_gpu),
}
# Libraries whose arrays can be handed to another library through __cuda_array_interface__.
_CAI_PRODUCERS = {MemoryType.CUPY, MemoryType.TORCH}


def _host_converter(source: MemoryType, target: MemoryType) -> Converter:
    def convert(data: Any, gpu_id: int | None) -> Any:
        return ADAPTERS[target].from_host(ADAPTERS[source].to_host(data), gpu_id)

    return convert


def _register_library(library: MemoryType) -> None:
    """Register every conversion to and from ``library`` (the lazy step for that library)."""
    for other in MemoryType:
        if other is library:
            continue
        for source, target in ((library, other), (other, library)):
            receiver = ADAPTERS[target]
            if receiver.from_dlpack is not None and ADAPTERS[source].from_dlpack is not None:
                conversions.register(source, target, ConversionMethod.DLPACK, receiver.from_dlpack)
            if receiver.from_cuda_array_interface is not None and source in _CAI_PRODUCERS:
                conversions.register(
                    source, target, ConversionMethod.CUDA_ARRAY_INTERFACE, receiver.from_cuda_array_interface
                )
            conversions.register(source, target, ConversionMethod.HOST, _host_converter(source, target))


for _library in MemoryType:
    conversions.register_lazy(_library)(lambda library=_library: _register_library(library))


# --------------------------------------------------------------------------------------------
# Public API


def gpu_index_of(data: Any) -> int | None:
    """The CUDA device index an array lives on, or None for host (and OpenCL) arrays."""
    return ADAPTERS[memory_type_of(data)].gpu_index(data)


def to_host(data: Any) -> np.ndarray:
    """The values of any supported array as a numpy array (shared with ``data`` where possible)."""
    return ADAPTERS[memory_type_of(data)].to_host(data)


def convert_memory_with_method(
    data: Any,
    source_type: MemoryType | str,
    target_type: MemoryType | str,
    gpu_id: int | None = None,
) -> tuple[Any, ConversionMethod]:
    """Like :func:`convert_memory`, and also return the method that produced the result."""
    source, target = as_memory_type(source_type), as_memory_type(target_type)
    try:
        actual = memory_type_of(data)
    except TypeError as exc:
        raise MemoryConversionError(source, target, "type check", str(exc)) from None
    if actual is not source:
        raise MemoryConversionError(
            source, target, "type check", f"the data is a {actual.value} array ({type(data).__qualname__})"
        )
    dtype = dtype_name(data)
    shape = tuple(data.shape)
    if source is target:
        return ADAPTERS[target].place(data, gpu_id), ConversionMethod.NOOP
    import_library(target)  # MissingLibraryError (an ImportError) names the extra to install
    try:
        check_dtype_supported(target, dtype)
    except TypeError as exc:
        raise MemoryConversionError(source, target, "dtype check", str(exc)) from None
    if gpu_id is None:
        gpu_id = ADAPTERS[source].gpu_index(data)

    failures: list[str] = []
    method = ConversionMethod.HOST
    for method, converter in conversions.methods(source, target):
        try:
            result = converter(data, gpu_id)
        except MissingLibraryError:
            raise
        except Exception as exc:  # noqa: BLE001 - try the next method, report all at the end
            failures.append(f"{method.value}: {type(exc).__name__}: {exc}")
            continue
        got_dtype, got_shape = dtype_name(result), tuple(result.shape)
        if (got_dtype, got_shape) != (dtype, shape):
            raise MemoryConversionError(
                source, target, method, f"produced {got_dtype}{list(got_shape)} from {dtype}{list(shape)}"
            )
        log.debug("converted %s → %s via %s", source.value, target.value, method.value)
        return result, method
    raise MemoryConversionError(source, target, method, "; ".join(failures) or "no conversion registered")


def convert_memory(
    data: Any,
    source_type: MemoryType | str,
    target_type: MemoryType | str,
    gpu_id: int | None = None,
) -> Any:
    """Convert ``data`` from ``source_type`` to ``target_type`` with the same values, dtype and shape.

    Raises :class:`MemoryConversionError` when ``data`` is not a ``source_type`` array, when the
    target cannot hold its dtype, or when every method fails; ``MissingLibraryError`` (an
    ``ImportError``) when the target library is not installed.
    """
    return convert_memory_with_method(data, source_type, target_type, gpu_id)[0]


def convert_to(
    data: Any, target_type: MemoryType | str, gpu_id: int | None = None, *, package: str | None = None
) -> Any:
    """Convert any supported array to ``target_type`` (its source type is detected).

    ``package`` (only for ``target_type="pyclesperanto"``): the pyclesperanto package the result
    must belong to (``"pyclesperanto"`` or ``"pyclesperanto_prototype"``), see
    :func:`to_pyclesperanto_package`. Without it an OpenCL array of either package is returned as is.
    """
    target = as_memory_type(target_type)
    if package is not None and target is MemoryType.PYCLESPERANTO:
        return to_pyclesperanto_package(data, package, gpu_id)
    return convert_memory(data, memory_type_of(data), target, gpu_id)


def to_pyclesperanto_package(data: Any, package: str | None, gpu_id: int | None = None) -> Any:
    """``data`` (an array of any supported type) as an OpenCL array of the pyclesperanto ``package``.

    ``package``: ``"pyclesperanto"``, ``"pyclesperanto_prototype"`` (alias ``"prototype"``), or
    None for the package hcsgraph uses. An array of that package is returned as is; anything else
    (numpy, another library, the other pyclesperanto package's arrays) is copied through host
    memory, keeping values, dtype and shape. A dtype the package cannot hold is a
    :class:`MemoryConversionError`; a package that is not installed, a ``MissingLibraryError``.
    """
    name = resolve_pyclesperanto_package(package)
    target = f"pyclesperanto ({name})"
    try:
        source = memory_type_of(data)
    except TypeError as exc:
        raise MemoryConversionError("unknown", target, "type check", str(exc)) from None
    got = pyclesperanto_package_of(data) if source is MemoryType.PYCLESPERANTO else None
    if got == name:
        return data
    label = f"pyclesperanto ({got})" if got else source
    dtype, shape = dtype_name(data), tuple(data.shape)
    try:
        check_dtype_supported(MemoryType.PYCLESPERANTO, dtype, name)
    except TypeError as exc:
        raise MemoryConversionError(label, target, "dtype check", str(exc)) from None
    try:
        result = _cle_from_host(np.asarray(ADAPTERS[source].to_host(data)), gpu_id, name)
    except MissingLibraryError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported as a conversion failure, with the cause
        raise MemoryConversionError(label, target, ConversionMethod.HOST, f"{type(exc).__name__}: {exc}") from exc
    got_dtype, got_shape = dtype_name(result), tuple(result.shape)
    if (got_dtype, got_shape) != (dtype, shape):
        raise MemoryConversionError(
            label, target, ConversionMethod.HOST, f"produced {got_dtype}{list(got_shape)} from {dtype}{list(shape)}"
        )
    log.debug("converted %s → %s via host", getattr(label, "value", label), target)
    return result


def conversion_table() -> list[tuple[MemoryType, MemoryType, list[ConversionMethod]]]:
    """Every ``(source, target, methods)`` in the registry, methods in the order they are tried."""
    return list(conversions.pairs())


def conversion_table_markdown() -> str:
    """The conversion table as the Markdown page ``docs/memory_conversions.md``."""
    lines = [
        "# Memory type conversions",
        "",
        "Generated by `hcsgraph.memory.convert.conversion_table_markdown()`; do not edit by hand.",
        "",
        "`convert_memory(data, source_type, target_type, gpu_id=None)` tries the methods of a pair",
        "from left to right and returns the first result. `dlpack` shares memory where both",
        "libraries sit on the same device; `cuda_array_interface` applies to CUDA arrays;",
        "`host` copies through a numpy array in host memory. Every method keeps values, dtype",
        "and shape; a dtype the target cannot hold is an error, never a cast.",
        "",
        "| source | target | methods, in order |",
        "| --- | --- | --- |",
    ]
    for source, target, methods in conversion_table():
        lines.append(f"| {source.value} | {target.value} | {', '.join(m.value for m in methods)} |")
    lines += ["", "## dtypes each memory type holds exactly", "", "| memory type | dtypes |", "| --- | --- |"]
    from hcsgraph.memory.dtypes import _CLE, _STATIC

    for memory_type, dtypes in _STATIC.items():
        note = " (64-bit types only with `jax_enable_x64`)" if memory_type is MemoryType.JAX else ""
        lines.append(f"| {memory_type.value} | {', '.join(sorted(dtypes))}{note} |")
    for module, dtypes in _CLE.items():
        lines.append(f"| pyclesperanto (`{module}`) | {', '.join(sorted(dtypes))} |")
    lines += [
        "",
        "## The two pyclesperanto packages",
        "",
        "`pyclesperanto` covers the OpenCL arrays of two packages: `pyclesperanto` (>= 0.25) and",
        "`pyclesperanto_prototype`. Conversions to `pyclesperanto` make arrays of the package hcsgraph",
        "uses: `pyclesperanto` when it is installed, else the prototype;",
        "`HCSGRAPH_PYCLESPERANTO=pyclesperanto_prototype` prefers the prototype. The packages' arrays do",
        "not mix (the prototype's functions reject `pyclesperanto` arrays), so:",
        "",
        "- `@pyclesperanto(package=\"prototype\")` (or `package=\"pyclesperanto\"`) declares the package a",
        "  function is written with; it is then given that package's arrays, through a host copy when",
        "  the stack belongs to the other package. Without `package=`, a function whose code refers to",
        "  exactly one of the two packages gets that one's arrays, any other the arrays hcsgraph uses;",
        "- `convert_to(data, \"pyclesperanto\", package=...)` and `to_pyclesperanto_package(data, package)`",
        "  make an array of a named package, keeping values, dtype and shape;",
        "- a function that still fails inside one package with the other's arrays raises",
        "  `PyclesperantoPackageError`, naming both packages and how to choose.",
    ]
    return "\n".join(lines) + "\n"


def write_conversion_table(path: str | Path) -> Path:
    """Write :func:`conversion_table_markdown` to ``path`` atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(conversion_table_markdown(), encoding="utf-8")
    tmp.replace(path)
    return path


if __name__ == "__main__":  # python -m hcsgraph.memory.convert docs/memory_conversions.md
    import sys

    print(write_conversion_table(sys.argv[1] if len(sys.argv) > 1 else "docs/memory_conversions.md"))
