"""Checks that need a CUDA device: streams, zero-copy, cleanup, real OOM, a GPU LocalCluster.

They are marked ``gpu`` and skip, with the reason, where torch has no CUDA or cupy is missing.
"""

from __future__ import annotations

import importlib.util
import sys
import threading

import cloudpickle
import numpy as np
import pytest

from hcsgraph.config import MemoryType
from hcsgraph.gpu import (
    cluster_gpu_count,
    current_device,
    get_stream,
    is_oom_error,
    local_cluster,
    run_with_oom_recovery,
    synchronize_stream,
    task_stream,
    task_streams,
)
from hcsgraph.gpu.oom import requested_bytes

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _torch_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _cupy_cuda() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - no driver or no device
        return False


TORCH_CUDA = _torch_cuda()
CUPY_CUDA = _cupy_cuda()
needs_torch = pytest.mark.skipif(not TORCH_CUDA, reason="needs a CUDA device and torch built with CUDA")
needs_cupy = pytest.mark.skipif(not CUPY_CUDA, reason="needs a CUDA device and cupy")
needs_both = pytest.mark.skipif(
    not (TORCH_CUDA and CUPY_CUDA), reason="needs a CUDA device, cupy and torch built with CUDA"
)
pytestmark = pytest.mark.gpu


def _stream_handle(memory_type: MemoryType, stream) -> int:
    return stream.cuda_stream if memory_type is MemoryType.TORCH else stream.ptr


def _current_handle(memory_type: MemoryType) -> int:
    if memory_type is MemoryType.TORCH:
        import torch

        return torch.cuda.current_stream(0).cuda_stream
    import cupy

    return cupy.cuda.get_current_stream().ptr


@pytest.mark.parametrize(
    "memory_type",
    [pytest.param(MemoryType.TORCH, marks=needs_torch), pytest.param(MemoryType.CUPY, marks=needs_cupy)],
)
def test_two_threads_get_different_streams(memory_type):
    barrier = threading.Barrier(2)
    seen: dict[str, tuple[int, int, int]] = {}

    def work(name: str) -> None:
        with task_stream(memory_type, 0) as stream:
            barrier.wait(timeout=30)  # both threads hold their stream at once
            current = _current_handle(memory_type)
            again = get_stream(memory_type, 0)
        seen[name] = (_stream_handle(memory_type, stream), current, _stream_handle(memory_type, again))

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    (a, a_current, a_again), (b, b_current, b_again) = seen["t0"], seen["t1"]
    assert a != b
    assert (a_current, a_again) == (a, a) and (b_current, b_again) == (b, b)
    assert not {a, b} & {0, 1, 2}  # not the legacy or per-thread default stream
    assert _in_new_thread(synchronize_stream, memory_type, 0) is False  # a new thread has made none


def _in_new_thread(func, *args):
    """``func(*args)`` in a thread of its own (a fresh set of per-thread streams)."""
    out: list = []

    def run() -> None:
        try:
            out.append(("ok", func(*args)))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            out.append(("error", exc))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=120)
    assert out, "the thread did not finish in 120 s"
    kind, value = out[0]
    if kind == "error":
        raise value
    return value


@needs_both
def test_task_streams_puts_both_libraries_of_a_conversion_on_this_threads_streams():
    import cupy
    import torch

    from hcsgraph.memory import convert_memory

    def work():
        with task_streams([MemoryType.CUPY, MemoryType.TORCH, MemoryType.NUMPY], 0) as entered:
            assert set(entered) == {MemoryType.CUPY, MemoryType.TORCH}
            currents = (cupy.cuda.get_current_stream().ptr, torch.cuda.current_stream(0).cuda_stream)
            x = cupy.arange(2 * 32 * 32, dtype=cupy.float32).reshape(2, 32, 32) * 3
            t = convert_memory(x, MemoryType.CUPY, MemoryType.TORCH, gpu_id=0) + 1
        # synchronised on exit: the values are there for any thread and library
        return currents, (entered[MemoryType.CUPY].ptr, entered[MemoryType.TORCH].cuda_stream), t.cpu().numpy()

    currents, own, values = _in_new_thread(work)
    assert currents == own and not set(own) & {0, 1, 2}
    np.testing.assert_array_equal(values, np.arange(2 * 32 * 32, dtype=np.float32).reshape(2, 32, 32) * 3 + 1)


@needs_torch
def test_a_nested_stream_block_waits_and_synchronises_once(monkeypatch):
    import torch

    calls = []
    original = torch.cuda.Stream.synchronize

    def counting(self):
        calls.append(self.cuda_stream)
        return original(self)

    monkeypatch.setattr(torch.cuda.Stream, "synchronize", counting)

    def work():
        with task_stream(MemoryType.TORCH, 0) as outer:
            a = torch.ones(1024, device="cuda:0")
            with task_stream(MemoryType.TORCH, 0) as inner:  # a function call inside a step
                b = a * 2
                assert torch.cuda.current_stream(0).cuda_stream == inner.cuda_stream
            assert not calls  # the inner block left the outer one running
            assert torch.cuda.current_stream(0).cuda_stream == outer.cuda_stream
        return outer is inner, float(b.sum())

    same, total = _in_new_thread(work)
    assert same and total == 2048.0 and len(calls) == 1


@needs_torch
def test_outside_a_worker_torch_gets_a_stream_once_it_uses_cuda():
    import torch

    def work():
        torch.zeros(1, device="cuda:0")  # CUDA in use in this process
        with task_stream(MemoryType.TORCH) as stream:
            current = torch.cuda.current_stream().cuda_stream
        return stream is not None and current == stream.cuda_stream and current not in (0, 1, 2)

    assert _in_new_thread(work)


@needs_both
def test_cupy_torch_conversion_is_zero_copy():
    import cupy

    from hcsgraph.memory import convert_memory

    x = cupy.arange(3 * 64 * 64, dtype=cupy.float32).reshape(3, 64, 64)
    t = convert_memory(x, MemoryType.CUPY, MemoryType.TORCH, gpu_id=0)
    assert t.is_cuda and t.data_ptr() == x.data.ptr
    back = convert_memory(t, MemoryType.TORCH, MemoryType.CUPY, gpu_id=0)
    assert back.data.ptr == x.data.ptr
    np.testing.assert_array_equal(cupy.asnumpy(back), cupy.asnumpy(x))


@needs_cupy
def test_cleanup_returns_cupy_memory_to_the_device():
    import cupy

    from hcsgraph.gpu.cleanup import cleanup_gpu_memory_by_framework

    pool = cupy.get_default_memory_pool()
    a = cupy.ones(2**26, dtype=cupy.uint8)
    del a
    assert pool.free_bytes() >= 2**26  # cached, not returned (other tests' live arrays may be in use)
    assert cleanup_gpu_memory_by_framework(MemoryType.CUPY, 0) is True
    assert pool.free_bytes() == 0 and pool.total_bytes() == pool.used_bytes()


@needs_torch
def test_cleanup_returns_torch_memory_to_the_device():
    import torch

    from hcsgraph.gpu.cleanup import cleanup_gpu_memory_by_framework

    a = torch.ones(2**26, dtype=torch.uint8, device="cuda:0")
    del a
    cached = torch.cuda.memory_reserved(0)
    assert cached >= 2**26
    cleanup_gpu_memory_by_framework(MemoryType.TORCH, 0)
    assert torch.cuda.memory_reserved(0) <= cached - 2**26


@needs_torch
def test_real_torch_oom_is_recognised_and_split_away():
    import torch

    with pytest.raises(Exception) as info:
        torch.empty(2**50, dtype=torch.uint8, device="cuda:0")
    assert is_oom_error(info.value) == "torch"
    assert requested_bytes(info.value) == pytest.approx(2**50, rel=0.01)

    free, _total = torch.cuda.mem_get_info(0)
    per_slice = free // 3  # 2 slices fit, 3 or more do not

    def greedy(stack, *, offset):
        scratch = torch.empty(stack.shape[0] * per_slice, dtype=torch.uint8, device=stack.device)
        del scratch
        return stack * 2 + offset

    data = torch.arange(8 * 4 * 4, dtype=torch.float32, device="cuda:0").reshape(8, 4, 4)
    result, recoveries = run_with_oom_recovery(
        greedy, data, {"offset": 1.0}, step="greedy", well="A01", memory_type="torch", device_id=0
    )
    assert [r.action for r in recoveries] == ["retry", "split"] and recoveries[0].kind == "torch"
    torch.testing.assert_close(result, data * 2 + 1, rtol=0, atol=0)


@needs_cupy
def test_real_cupy_oom_is_recognised():
    import cupy

    with pytest.raises(Exception) as info:
        cupy.empty(2**50, dtype=cupy.uint8)
    assert is_oom_error(info.value) == "cupy"
    assert requested_bytes(info.value) == 2**50


def _device_of_worker(dask_worker):
    info = dask_worker._hcsgraph_gpu
    return info.device_id, info.pools


def cupy_blur(data):
    import cupy
    from cupyx.scipy import ndimage

    with task_stream(MemoryType.CUPY):
        return ndimage.gaussian_filter(cupy.asarray(data), sigma=(0, 1.5, 1.5))


def torch_background(blurred):
    import torch

    from hcsgraph.memory import convert_memory

    synchronize_stream(MemoryType.CUPY)
    device = current_device()
    t = convert_memory(blurred, MemoryType.CUPY, MemoryType.TORCH, gpu_id=device)
    with task_stream(MemoryType.TORCH):
        out = torch.clamp(t - t.mean(dim=(1, 2), keepdim=True), min=0)
    return convert_memory(out, MemoryType.TORCH, MemoryType.NUMPY), device, str(t.device)


@needs_both
def test_cupy_then_torch_on_a_gpu_local_cluster():
    from distributed import Client
    from scipy import ndimage

    data = np.random.default_rng(6).random((4, 64, 64), dtype=np.float32)
    cluster = local_cluster(n_workers=1, dashboard_address=":0")
    try:
        with Client(cluster) as client:
            assert cluster_gpu_count(client) == 1
            ((device_id, pools),) = client.run(_device_of_worker).values()
            assert device_id == 0 and pools
            blurred = client.submit(cupy_blur, data, resources={"GPU": 1})
            out, device, where = client.submit(torch_background, blurred, resources={"GPU": 1}).result(
                timeout=120
            )
    finally:
        cluster.close()
    reference = ndimage.gaussian_filter(data, sigma=(0, 1.5, 1.5))
    reference = np.clip(reference - reference.mean(axis=(1, 2), keepdims=True), 0, None)
    assert device == 0 and where == "cuda:0"
    assert out.dtype == np.float32 and out.shape == data.shape
    np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-5)
