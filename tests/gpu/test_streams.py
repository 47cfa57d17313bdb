"""Per-thread CUDA streams where there is no CUDA: cheap no-ops that import nothing.

The checks with a real device (a step on a non-default stream of its thread) are in
``test_on_device.py`` and ``tests/pipeline/test_gpu_pipeline.py``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest

from hcsgraph.config import MemoryType
from hcsgraph.gpu import streams
from hcsgraph.gpu.devices import DeviceInfo
from hcsgraph.gpu.streams import get_stream, synchronize_stream, task_stream, task_streams


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _cupy_cuda() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no driver or no device
        return False


no_torch_cuda = pytest.mark.skipif(_torch_cuda(), reason="checks torch without CUDA")
no_cupy_cuda = pytest.mark.skipif(_cupy_cuda(), reason="checks a machine where cupy has no CUDA device")

NO_STREAMS = [MemoryType.NUMPY, MemoryType.TENSORFLOW, MemoryType.JAX, MemoryType.PYCLESPERANTO, "numpy", "JAX"]


@pytest.mark.parametrize("memory_type", NO_STREAMS, ids=str)
def test_libraries_without_streams_are_no_ops(memory_type):
    ran = []
    with task_stream(memory_type) as stream, task_stream(memory_type, 0) as explicit:
        ran.append(True)
    assert stream is None and explicit is None and ran == [True]
    assert get_stream(memory_type) is None and get_stream(memory_type, 0) is None
    assert synchronize_stream(memory_type) is False
    with task_streams([memory_type, MemoryType.NUMPY], 0) as entered:
        assert entered == {}


def test_an_unknown_memory_type_is_an_error():
    with pytest.raises(ValueError, match="'opencl' is not a valid MemoryType"), task_stream("opencl"):
        pass


@no_torch_cuda
def test_torch_without_cuda_is_a_no_op():
    import torch

    for device_id in (None, 0):  # even an explicit device: torch cannot make a stream
        with task_stream(MemoryType.TORCH, device_id) as stream:
            value = (torch.arange(4) * 2).tolist()
        assert stream is None and value == [0, 2, 4, 6]
        assert get_stream("torch", device_id) is None
    with task_streams([MemoryType.CUPY, "torch", MemoryType.NUMPY], 0) as entered:
        assert entered == {}
    assert synchronize_stream(MemoryType.TORCH) is False


@no_cupy_cuda
def test_cupy_without_a_device_is_a_no_op():
    for device_id in (None, 0):
        with task_stream(MemoryType.CUPY, device_id) as stream:
            pass
        assert stream is None and get_stream("cupy", device_id) is None


def test_no_op_streams_import_no_array_library():
    """In a fresh process: entering streams for every memory type imports none of the libraries."""
    code = (
        "import sys\n"
        "from hcsgraph.gpu.streams import task_stream, task_streams, get_stream\n"
        "types = ['numpy', 'tensorflow', 'jax', 'pyclesperanto', 'torch']\n"
        + ("types.append('cupy')\n" if importlib.util.find_spec("cupy") is None else "")
        + "for t in types:\n"
        "    with task_stream(t) as s:\n"
        "        assert s is None, t\n"
        "    assert get_stream(t) is None, t\n"
        "with task_streams(types) as entered:\n"
        "    assert entered == {}\n"
        "print([m for m in ('torch', 'cupy', 'jax', 'tensorflow', 'pyclesperanto', 'pyopencl') if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_no_op_streams_are_cheap():
    pytest.importorskip("torch")
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        with task_stream(MemoryType.TORCH), task_streams((MemoryType.NUMPY, MemoryType.TORCH)):
            pass
        with task_stream(MemoryType.NUMPY):
            pass
    per_call = (time.perf_counter() - start) / n
    assert per_call < 5e-4, f"{per_call * 1e6:.0f} µs per task"  # in practice a few µs


def test_the_device_comes_from_the_call_then_the_worker_then_the_library(monkeypatch):
    """Which device a stream is for, without CUDA: the rules, with the worker and library faked."""
    library = {MemoryType.TORCH: 3, MemoryType.CUPY: 4}
    monkeypatch.setattr(streams, "_library_device", lambda memory_type: library[memory_type])
    monkeypatch.setattr(streams, "current_device_info", lambda: None)  # outside a worker
    assert streams._device_for(MemoryType.TORCH, None) == 3
    assert streams._device_for(MemoryType.CUPY, None) == 4
    assert streams._device_for(MemoryType.TORCH, 1) == 1  # an explicit device wins
    monkeypatch.setattr(streams, "current_device_info", lambda: DeviceInfo(0, "2", ("2", "0"), "first entry"))
    assert streams._device_for(MemoryType.TORCH, None) == 0  # the worker's GPU
    monkeypatch.setattr(streams, "current_device_info", lambda: DeviceInfo(None, reason="no NVIDIA driver found"))
    assert streams._device_for(MemoryType.TORCH, None) is None  # a worker without a GPU: no stream


def test_a_worker_without_a_gpu_never_makes_a_stream(monkeypatch):
    def must_not_run(*args):
        raise AssertionError("a stream was asked for on a worker without a GPU")

    monkeypatch.setattr(streams, "current_device_info", lambda: DeviceInfo(None, reason="no NVIDIA driver found"))
    monkeypatch.setattr(streams, "_library_device", must_not_run)
    monkeypatch.setattr(streams, "_new_stream", must_not_run)
    for memory_type in (MemoryType.TORCH, MemoryType.CUPY):
        with task_stream(memory_type) as stream, task_streams([memory_type]) as entered:
            pass
        assert stream is None and entered == {}


def test_a_library_that_cannot_make_a_stream_runs_without_one(monkeypatch):
    calls = []

    def broken(memory_type, device):
        calls.append((memory_type, device))
        raise AssertionError("Torch not compiled with CUDA enabled")

    monkeypatch.setattr(streams, "_new_stream", broken)
    monkeypatch.setattr(streams, "_unusable", set())
    monkeypatch.setattr(streams, "current_device_info", lambda: DeviceInfo(5, "5", (), "explicit device_id"))
    for _ in range(3):
        with task_stream(MemoryType.TORCH) as stream:
            pass
        assert stream is None
    assert calls == [(MemoryType.TORCH, 5)]  # tried once, then remembered


def test_only_the_outermost_block_waits_and_synchronises(monkeypatch):
    """Nesting bookkeeping, with a fake stream: the inner blocks of a step reuse the stream as is."""
    events = []
    fake = object()

    @contextmanager
    def fake_torch_stream(stream, device, outermost, synchronize):
        events.append(("enter", device, outermost))
        yield stream
        if outermost and synchronize:
            events.append(("synchronize", device))

    monkeypatch.setattr(streams, "_new_stream", lambda memory_type, device: fake)
    monkeypatch.setattr(streams, "_unusable", set())
    monkeypatch.setattr(streams, "_torch_stream", fake_torch_stream)

    def work():
        with task_stream(MemoryType.TORCH, 7) as outer:
            with task_stream("torch", 7) as inner, task_streams([MemoryType.NUMPY, MemoryType.TORCH], 7) as both:
                assert inner is outer is fake and both == {MemoryType.TORCH: fake}
        assert events == [("enter", 7, True), ("enter", 7, False), ("enter", 7, False), ("synchronize", 7)]
        events.clear()
        with pytest.raises(RuntimeError, match="step failed"), task_stream(MemoryType.TORCH, 7):
            raise RuntimeError("step failed")
        with task_stream(MemoryType.TORCH, 7, synchronize=False):
            pass
        with task_stream(MemoryType.TORCH, 7):  # the failure left no stale depth behind
            pass
        assert events == [("enter", 7, True), ("enter", 7, True), ("enter", 7, True), ("synchronize", 7)]
        assert get_stream(MemoryType.TORCH, 7) is fake and get_stream(MemoryType.CUPY, 7) is fake

    thread = threading.Thread(target=lambda: results.append(_capture(work)))
    results: list = []
    thread.start()
    thread.join(timeout=60)
    assert results == [None]


def _capture(func):
    try:
        func()
    except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
        return exc
    return None
