"""HostAllocatorPlugin: malloc thresholds sized to the worker's limit, and trimming before dask pauses it."""

from __future__ import annotations

import time

import numpy as np
import pytest
from distributed import Client

from hcsgraph.gpu import local_cluster
from hcsgraph.workers import HostAllocatorPlugin, settings_for
from hcsgraph.workers.allocator import glibc

MiB = 2**20

needs_glibc = pytest.mark.skipif(glibc() is None, reason="the C library is not glibc (no mallopt/malloc_trim)")


def test_thresholds_follow_the_memory_limit():
    small = settings_for(400 * MiB)
    assert small.mmap_threshold == 400 * MiB // 128 and small.trim_threshold == 2 * small.mmap_threshold
    assert small.trim_above == 200 * MiB
    assert settings_for(16 * 2**30).mmap_threshold == 32 * MiB  # glibc's own ceiling
    assert settings_for(8 * MiB).mmap_threshold == 128 * 1024  # never below glibc's default
    unlimited = settings_for(None)
    assert unlimited.mmap_threshold == 32 * MiB and unlimited.trim_above is None


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="limit_fraction"):
        HostAllocatorPlugin(limit_fraction=0)
    with pytest.raises(ValueError, match="trim_above"):
        HostAllocatorPlugin(trim_above=1.5)
    with pytest.raises(ValueError, match="check_interval"):
        HostAllocatorPlugin(check_interval=0)


def _fragment_heap(n_buffers: int, hold_seconds: float = 0.0) -> tuple[np.ndarray, int]:
    """Fill the heap with 4 MiB buffers and free all but the last, so the freed pages stay mapped;
    then stay busy for ``hold_seconds``. Returns the kept buffer and the lowest RSS seen while busy."""
    buffers = [np.ones(4 * MiB // 8) for _ in range(n_buffers)]
    last = buffers[-1].copy()
    del buffers
    lowest = _rss()
    deadline = time.monotonic() + hold_seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
        lowest = min(lowest, _rss())
    return last, lowest


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _worker_rss(client: Client) -> int:
    return next(iter(client.run(_rss).values()))


@needs_glibc
def test_freed_heap_goes_back_above_the_threshold_and_when_idle():
    with local_cluster(n_workers=1, threads_per_worker=1, memory_limit="1GiB", dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        (settings,) = client.run(lambda dask_worker: dask_worker.hcsgraph_allocator).values()
        assert settings == settings_for(2**30)
        assert settings.mmap_threshold == 8 * MiB and settings.trim_above == 512 * MiB
        baseline = _worker_rss(client)
        # 600 MiB through the heap while the task keeps the worker busy: trimmed above 512 MiB
        kept, lowest = client.submit(_fragment_heap, 150, 3.0, pure=False).result()
        assert kept.shape == (4 * MiB // 8,)
        assert lowest <= baseline + 150 * MiB, f"busy worker kept {lowest / MiB:.0f} MiB (was {baseline / MiB:.0f})"
        # 300 MiB, under the threshold: given back once the worker is idle
        kept, busy = client.submit(_fragment_heap, 75, pure=False).result()
        assert busy > baseline + 250 * MiB  # the heap really held the freed buffers
        deadline = time.monotonic() + 20
        rss = _worker_rss(client)
        while rss > baseline + 150 * MiB and time.monotonic() < deadline:
            time.sleep(0.2)
            rss = _worker_rss(client)
        assert rss <= baseline + 150 * MiB, f"idle worker kept {rss / MiB:.0f} MiB (was {baseline / MiB:.0f})"


@needs_glibc
def test_the_plugin_can_be_left_out():
    with local_cluster(n_workers=1, threads_per_worker=1, allocator=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        values = client.run(lambda dask_worker: getattr(dask_worker, "hcsgraph_allocator", "absent"))
        assert list(values.values()) == ["absent"]


def test_in_process_workers_leave_the_callers_malloc_alone():
    with local_cluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        values = client.run(lambda dask_worker: getattr(dask_worker, "hcsgraph_allocator", "absent"))
        assert list(values.values()) == ["absent"]
