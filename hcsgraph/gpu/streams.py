"""Per-thread CUDA streams for cupy and torch.

A worker runs several tasks at once, one per thread. Each thread gets its own CUDA stream per
library and device, created on first use and kept in a ``threading.local`` for the life of the
thread, so that kernels of different tasks overlap on the GPU instead of queueing on the
default stream.

:func:`task_stream` (one memory type) and :func:`task_streams` (several, e.g. both sides of a
conversion) wrap any conversion or function call. They are cheap no-ops, importing nothing,
for memory types without streams in hcsgraph (numpy, tensorflow, jax, pyclesperanto) and where
there is no CUDA device to use. Which device:

- ``device_id`` when given;
- else, inside a worker with :class:`~hcsgraph.gpu.GPUWorkerPlugin`, the worker's GPU; a worker
  the plugin found without a GPU gets no stream;
- else (outside a worker, or without the plugin) the library's current device, when the
  library already uses CUDA in this process: cupy when it sees a device, torch once it has
  initialised CUDA. Host data stays on the host there (``convert_to(..., gpu_id=None)``), so a
  process that never touched CUDA does not start a CUDA context for a stream.

On entry the stream waits for work already queued on the stream that was current, so inputs
produced there are ready; on exit it is synchronised, so the result can be handed to another
thread, task or library. Re-entering the stream a thread already runs on (a function call
inside a step that is already on the stream) neither waits nor synchronises again: the
outermost block does it.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from hcsgraph.config import MemoryType
from hcsgraph.gpu.devices import current_device_info

logger = logging.getLogger("hcsgraph.gpu")

_STREAM_TYPES = (MemoryType.CUPY, MemoryType.TORCH)
_STREAM_VALUES = {m.value: m for m in _STREAM_TYPES}


class _ThreadStreams(threading.local):
    """This thread's streams, keyed by (memory type, device ordinal), and how deep it is in each."""

    def __init__(self) -> None:
        self.streams: dict[tuple[MemoryType, int], Any] = {}
        self.depth: dict[tuple[MemoryType, int], int] = {}


_thread = _ThreadStreams()
_unusable: set[tuple[MemoryType, int]] = set()  # (type, device) where making a stream failed


def _stream_type(memory_type: MemoryType | str) -> MemoryType | None:
    """The memory type when it has streams in hcsgraph, else None (cheap: no enum construction)."""
    if isinstance(memory_type, MemoryType):
        return memory_type if memory_type in _STREAM_TYPES else None
    if isinstance(memory_type, str):
        if memory_type in _STREAM_VALUES:
            return _STREAM_VALUES[memory_type]
        return _stream_type(MemoryType(memory_type.lower()))  # ValueError for unknown names
    return _stream_type(MemoryType(memory_type))


@functools.cache
def _cupy_installed() -> bool:
    """Whether cupy can be imported; asked once (a missing module is not searched for again)."""
    from hcsgraph.memory.libraries import is_installed

    return is_installed(MemoryType.CUPY)


def _library_device(memory_type: MemoryType) -> int | None:
    """The library's current CUDA device when it already uses CUDA in this process, else None."""
    try:
        if memory_type is MemoryType.CUPY:
            if not _cupy_installed():
                return None
            cupy = sys.modules.get("cupy") or importlib.import_module("cupy")
            return int(cupy.cuda.runtime.getDevice()) if cupy.cuda.runtime.getDeviceCount() > 0 else None
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_initialized():
            return None  # no CUDA tensor exists in this process yet
        return int(torch.cuda.current_device())
    except Exception:  # noqa: BLE001 - library missing, or no driver / device
        return None


def _device_for(memory_type: MemoryType, device_id: int | None) -> int | None:
    if device_id is not None:
        return device_id
    info = current_device_info()
    if info is not None:  # the GPUWorkerPlugin decided; None: this worker has no GPU
        return info.device_id
    return _library_device(memory_type)


def _new_stream(memory_type: MemoryType, device: int) -> Any:
    if memory_type is MemoryType.CUPY:
        import cupy

        with cupy.cuda.Device(device):
            return cupy.cuda.Stream(non_blocking=True)
    import torch

    return torch.cuda.Stream(device=device)


def _stream_on_device(memory_type: MemoryType, device_id: int | None) -> tuple[Any, int] | None:
    device = _device_for(memory_type, device_id)
    if device is None:
        return None
    key = (memory_type, device)
    stream = _thread.streams.get(key)
    if stream is None:
        if key in _unusable:
            return None
        try:
            stream = _new_stream(memory_type, device)
        except Exception as exc:  # noqa: BLE001 - e.g. torch built without CUDA: run without a stream
            _unusable.add(key)
            logger.debug("no %s stream on CUDA device %s: %s: %s", memory_type.value, device,
                         type(exc).__name__, exc)
            return None
        _thread.streams[key] = stream
    return stream, device


def get_stream(memory_type: MemoryType | str, device_id: int | None = None) -> Any | None:
    """This thread's stream for ``memory_type`` on ``device_id``; created on first use.

    ``device_id`` defaults as in :func:`task_stream`. Returns None for libraries without streams
    or without a CUDA device to use.
    """
    stream_type = _stream_type(memory_type)
    if stream_type is None:
        return None
    found = _stream_on_device(stream_type, device_id)
    return None if found is None else found[0]


@contextmanager
def _cupy_stream(stream: Any, device: int, outermost: bool, synchronize: bool) -> Iterator[Any]:
    import cupy

    with cupy.cuda.Device(device):
        if outermost:
            stream.wait_event(cupy.cuda.get_current_stream().record())
        with stream:
            yield stream
        if outermost and synchronize:
            stream.synchronize()


@contextmanager
def _torch_stream(stream: Any, device: int, outermost: bool, synchronize: bool) -> Iterator[Any]:
    import torch

    with torch.cuda.device(device):
        if outermost:
            stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            yield stream
        if outermost and synchronize:
            stream.synchronize()


@contextmanager
def task_stream(
    memory_type: MemoryType | str, device_id: int | None = None, *, synchronize: bool = True
) -> Iterator[Any | None]:
    """Run the body on this thread's stream for ``memory_type``; yields the stream (None: no-op).

    See the module documentation for the device used, the no-op cases and synchronisation.
    ``synchronize=False`` leaves the stream running on exit (the caller synchronises it, e.g.
    with :func:`synchronize_stream`, before handing results on).
    """
    stream_type = _stream_type(memory_type)
    found = _stream_on_device(stream_type, device_id) if stream_type is not None else None
    if found is None:
        yield None
        return
    stream, device = found
    key = (stream_type, device)
    depth = _thread.depth.get(key, 0)
    manager = _cupy_stream if stream_type is MemoryType.CUPY else _torch_stream
    _thread.depth[key] = depth + 1
    try:
        with manager(stream, device, depth == 0, synchronize) as entered:
            yield entered
    finally:
        if depth:
            _thread.depth[key] = depth
        else:
            _thread.depth.pop(key, None)


@contextmanager
def task_streams(
    memory_types: Iterable[MemoryType | str], device_id: int | None = None, *, synchronize: bool = True
) -> Iterator[dict[MemoryType, Any]]:
    """:func:`task_stream` for each of ``memory_types`` that has streams (cupy, torch) at once.

    For a conversion or a step touching several libraries: ``task_streams((source, target),
    gpu_id)``. Yields ``{memory type: stream}`` for the streams entered; empty (a no-op) when none.
    """
    wanted: list[MemoryType] = []
    for memory_type in memory_types:
        stream_type = _stream_type(memory_type)
        if stream_type is not None and stream_type not in wanted:
            wanted.append(stream_type)
    if not wanted:
        yield {}
        return
    with ExitStack() as stack:
        entered = {}
        for stream_type in wanted:
            stream = stack.enter_context(task_stream(stream_type, device_id, synchronize=synchronize))
            if stream is not None:
                entered[stream_type] = stream
        yield entered


def synchronize_stream(memory_type: MemoryType | str, device_id: int | None = None) -> bool:
    """Wait for this thread's stream for ``memory_type`` to finish; True when there was one.

    Call it at a conversion edge before handing device data to another library.
    """
    stream_type = _stream_type(memory_type)
    if stream_type is None or not _thread.streams:
        return False
    device = device_id
    if device is None:
        info = current_device_info()
        device = info.device_id if info is not None else None
    streams = [
        s
        for (mt, dev), s in _thread.streams.items()
        if mt is stream_type and (device is None or dev == device)
    ]
    for stream in streams:
        stream.synchronize()
    return bool(streams)
