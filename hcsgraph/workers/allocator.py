"""``HostAllocatorPlugin``: glibc malloc settings sized to each worker's memory limit.

distributed starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536`` so that freed memory goes
back to the system at once. That setting also freezes glibc's mmap threshold at 128 KiB: every
image-sized buffer (a 1024x1024 plane is 1-8 MiB) becomes a fresh ``mmap`` whose pages are
faulted in and zeroed again on first touch. On an image pipeline that is thousands of page faults
per image and 10-15 % of the worker's CPU time.

The plugin keeps the purpose of the setting (RSS that tracks the data the worker holds, so
dask's pause and restart thresholds see real memory) and drops its cost:

- buffers up to ``mmap_threshold`` are served from (and returned to) malloc's heap, so they are
  reused between tasks instead of re-mapped; the threshold is a fraction of the worker's memory
  limit, so a small worker keeps small thresholds;
- the heap keeps at most ``trim_threshold`` free bytes at its top;
- a periodic check on the worker's event loop calls ``malloc_trim(0)`` when the process holds
  more than ``trim_above`` of its memory limit, so free pages inside the heap go back before dask
  would pause the worker (it also runs while the worker is paused, when no task can run), and
  when the worker is idle and has grown since the last trim, so a finished run leaves no
  retained heap behind.

On a system without glibc (macOS, musl, Windows) the plugin does nothing but log that.
:func:`hcsgraph.gpu.local_cluster` registers it; on any other cluster::

    client.register_plugin(HostAllocatorPlugin())
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

logger = logging.getLogger("hcsgraph.workers")

WORKER_ATTRIBUTE = "hcsgraph_allocator"
"""Worker attribute holding the :class:`AllocatorSettings` the plugin applied (None without glibc)."""

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MIN_MMAP_THRESHOLD = 128 * 1024
MAX_MMAP_THRESHOLD = 32 * 2**20  # glibc's own ceiling for the dynamic threshold on 64-bit systems


@dataclass(frozen=True)
class AllocatorSettings:
    """What the plugin set on one worker, in bytes."""

    mmap_threshold: int
    trim_threshold: int
    memory_limit: int | None
    trim_above: int | None


def glibc() -> Any | None:
    """The C library through ctypes when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not all(hasattr(libc, name) for name in ("mallopt", "malloc_trim", "gnu_get_libc_version")):
        return None
    return libc


def settings_for(memory_limit: int | None, limit_fraction: float = 1 / 128,
                 trim_above: float = 0.5) -> AllocatorSettings:
    """Thresholds for a worker with ``memory_limit`` bytes (None or 0: no limit).

    The mmap threshold is ``limit_fraction`` of the limit, between 128 KiB and 32 MiB; the heap
    may keep twice that free at its top.
    """
    limit = int(memory_limit) if memory_limit else None
    mmap_threshold = MAX_MMAP_THRESHOLD if limit is None else int(
        min(MAX_MMAP_THRESHOLD, max(MIN_MMAP_THRESHOLD, limit * limit_fraction)))
    return AllocatorSettings(
        mmap_threshold=mmap_threshold,
        trim_threshold=2 * mmap_threshold,
        memory_limit=limit,
        trim_above=None if limit is None else int(limit * trim_above),
    )


class HostAllocatorPlugin(WorkerPlugin):
    """Size glibc's malloc thresholds to the worker's memory limit and trim before dask pauses it.

    ``limit_fraction``: the mmap threshold as a fraction of the worker's memory limit (clamped
    to 128 KiB..32 MiB). ``trim_above``: fraction of the limit above which the process's RSS is
    trimmed with ``malloc_trim(0)``, checked every ``check_interval`` seconds.
    """

    name = "hcsgraph-host-allocator"
    idempotent = True

    def __init__(self, limit_fraction: float = 1 / 128, trim_above: float = 0.5,
                 check_interval: float = 0.1) -> None:
        if not 0 < limit_fraction <= 1:
            raise ValueError(f"limit_fraction={limit_fraction!r} must be in (0, 1]")
        if not 0 < trim_above < 1:
            raise ValueError(f"trim_above={trim_above!r} must be in (0, 1)")
        if check_interval <= 0:
            raise ValueError(f"check_interval={check_interval!r} must be positive (seconds)")
        self.limit_fraction = limit_fraction
        self.trim_above = trim_above
        self.check_interval = check_interval
        self._callback: Any = None

    def setup(self, worker: Any) -> None:
        """Apply the thresholds and start the trim check on the worker's event loop."""
        libc = glibc()
        if libc is None:
            logger.info("worker %s: not glibc; malloc settings left as they are", worker.address)
            setattr(worker, WORKER_ATTRIBUTE, None)
            return
        limit = getattr(worker.memory_manager, "memory_limit", None)
        settings = settings_for(limit, self.limit_fraction, self.trim_above)
        libc.mallopt(M_MMAP_THRESHOLD, settings.mmap_threshold)
        libc.mallopt(M_TRIM_THRESHOLD, settings.trim_threshold)
        setattr(worker, WORKER_ATTRIBUTE, settings)
        logger.info("worker %s: malloc mmap threshold %d KiB, trim threshold %d KiB, trim above %s",
                    worker.address, settings.mmap_threshold >> 10, settings.trim_threshold >> 10,
                    "only when idle" if settings.trim_above is None else f"{settings.trim_above >> 20} MiB")
        from tornado.ioloop import PeriodicCallback

        threshold = settings.trim_above if settings.trim_above is not None else sys.maxsize
        trimmer = Trimmer(libc, worker.monitor.get_process_memory, threshold,
                          idle=lambda: worker.state.executing_count == 0 and not worker.state.ready)
        self._callback = PeriodicCallback(trimmer, self.check_interval * 1000)
        self._callback.start()

    def teardown(self, worker: Any) -> None:
        """Stop the trim check (the malloc settings stay for the life of the process)."""
        if self._callback is not None:
            self._callback.stop()
            self._callback = None


class Trimmer:
    """Calls ``malloc_trim(0)`` when ``rss()`` is above ``threshold`` bytes, or when ``idle()`` on
    two checks in a row (not just between two tasks) and the RSS grew by ``min_gain`` bytes since
    the last trim.

    When a trim above the threshold gives back less than ``min_gain`` bytes (the memory is in
    use, not free), the next checks are skipped for a while, doubling up to ``max_skip`` checks,
    so a worker that holds its data does not keep walking the heap.
    """

    def __init__(self, libc: Any, rss: Callable[[], int], threshold: int, idle: Callable[[], bool] = lambda: False,
                 min_gain: int = 8 * 2**20, max_skip: int = 64) -> None:
        self.libc = libc
        self.rss = rss
        self.idle = idle
        self.threshold = threshold
        self.min_gain = min_gain
        self.max_skip = max_skip
        self._after_last_trim = 0
        self._was_idle = False
        self._skip = 0
        self._backoff = 0

    def __call__(self) -> bool:
        """One check; True if it trimmed."""
        before = self.rss()
        idle, self._was_idle = self._was_idle, self.idle()
        idle = idle and self._was_idle
        if before > self.threshold:
            if self._skip:
                self._skip -= 1
                return False
        elif not (idle and before > self._after_last_trim + self.min_gain):
            self._backoff = 0
            return False
        self.libc.malloc_trim(0)
        self._after_last_trim = after = self.rss()
        if before > self.threshold and before - after < self.min_gain:
            self._backoff = min(self.max_skip, max(1, 2 * self._backoff))
            self._skip = self._backoff
        else:
            self._backoff = 0
        return True
