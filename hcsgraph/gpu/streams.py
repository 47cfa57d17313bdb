"""Per-thread CUDA streams for cupy and torch.

A worker runs several tasks at once, one per thread. Each thread gets its own CUDA stream per
library and device, created on first use and kept in a ``threading.local`` for the life of the
thread, so that kernels of different tasks overlap on the GPU instead of queueing on the
default stream. Without CUDA (or for libraries without streams in hcsgraph: numpy,
tensorflow, jax, pyclesperanto) everything here is a no-op.
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hcsgraph.config import MemoryType
from hcsgraph.gpu.devices import current_device

_STREAM_TYPES = (MemoryType.CUPY, MemoryType.TORCH)


class _ThreadStreams(threading.local):
    """This thread's streams, keyed by (memory type, device ordinal)."""

    def __init__(self) -> None:
        self.streams: dict[tuple[MemoryType, int], Any] = {}


_thread = _ThreadStreams()


def _library_device(memory_type: MemoryType) -> int | None:
    """The library's current CUDA device, or None when it has no usable CUDA device."""
    try:
        if memory_type is MemoryType.CUPY:
            cupy = importlib.import_module("cupy")
            return int(cupy.cuda.runtime.getDevice()) if cupy.cuda.runtime.getDeviceCount() > 0 else None
        torch = sys.modules.get("torch") or importlib.import_module("torch")
        return int(torch.cuda.current_device()) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - library missing, or no driver / device
        return None


def get_stream(memory_type: MemoryType | str, device_id: int | None = None) -> Any | None:
    """This thread's stream for ``memory_type`` on ``device_id``; created on first use.

    ``device_id`` defaults to the worker's GPU (:func:`~hcsgraph.gpu.current_device`), else the
    library's current device. Returns None for libraries without streams or without CUDA.
    """
    found = _stream_on_device(MemoryType(memory_type), device_id)
    return None if found is None else found[0]


def _stream_on_device(memory_type: MemoryType, device_id: int | None) -> tuple[Any, int] | None:
    if memory_type not in _STREAM_TYPES:
        return None
    device = device_id if device_id is not None else current_device()
    if device is None:
        device = _library_device(memory_type)
        if device is None:
            return None
    key = (memory_type, device)
    stream = _thread.streams.get(key)
    if stream is None:
        if memory_type is MemoryType.CUPY:
            import cupy

            with cupy.cuda.Device(device):
                stream = cupy.cuda.Stream(non_blocking=True)
        else:
            import torch

            stream = torch.cuda.Stream(device=device)
        _thread.streams[key] = stream
    return stream, device


@contextmanager
def task_stream(
    memory_type: MemoryType | str, device_id: int | None = None, *, synchronize: bool = True
) -> Iterator[Any | None]:
    """Run the body on this thread's stream for ``memory_type``; yields the stream (None: no-op).

    On entry the stream waits for work already queued on the stream that was current, so inputs
    produced there are ready. On exit it is synchronised (unless ``synchronize=False``), so the
    result can be handed to another thread or library.
    """
    memory_type = MemoryType(memory_type)
    found = _stream_on_device(memory_type, device_id)
    if found is None:
        yield None
        return
    stream, device = found
    if memory_type is MemoryType.CUPY:
        import cupy

        with cupy.cuda.Device(device):
            stream.wait_event(cupy.cuda.get_current_stream().record())
            with stream:
                yield stream
            if synchronize:
                stream.synchronize()
    else:
        import torch

        with torch.cuda.device(device):
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                yield stream
            if synchronize:
                stream.synchronize()


def synchronize_stream(memory_type: MemoryType | str, device_id: int | None = None) -> bool:
    """Wait for this thread's stream for ``memory_type`` to finish; True when there was one.

    Call it at a conversion edge before handing device data to another library.
    """
    memory_type = MemoryType(memory_type)
    if memory_type not in _STREAM_TYPES:
        return False
    device = device_id if device_id is not None else current_device()
    streams = [
        s
        for (mt, dev), s in _thread.streams.items()
        if mt is memory_type and (device is None or dev == device)
    ]
    for stream in streams:
        stream.synchronize()
    return bool(streams)
