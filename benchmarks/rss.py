"""Peak resident memory of a process tree, sampled in a background thread."""

from __future__ import annotations

import threading
from types import TracebackType

import psutil


class PeakRSS:
    """Sample the RSS of this process and of its descendants (pool workers, nannies, dask workers).

    ``pids`` (pid → label) limits the sampling to those descendants; by default all are sampled. Use as a context manager around the timed region; ``peaks`` maps pid → peak bytes and
    ``names`` maps pid → a label (given with :meth:`label`, else the process name).
    """

    def __init__(self, pids: dict[int, str] | None = None, interval: float = 0.05) -> None:
        self.interval = interval
        self.only = dict(pids) if pids is not None else None
        self.peaks: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self._root = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.names[self._root.pid] = "main"
        self.names.update(self.only or {})

    def label(self, pid: int, name: str) -> None:
        """Name the process ``pid`` in the report (e.g. ``"worker-0"``)."""
        self.names[pid] = name

    def sample(self) -> None:
        """Record the current RSS of every process in the tree."""
        procs = [self._root]
        try:
            procs += self._root.children(recursive=True)
        except psutil.Error:
            pass
        if self.only is not None:
            procs = [p for p in procs if p.pid == self._root.pid or p.pid in self.only]
        for proc in procs:
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            if rss > self.peaks.get(proc.pid, 0):
                self.peaks[proc.pid] = rss
                if proc.pid not in self.names:
                    self.names[proc.pid] = _describe(proc)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def report(self) -> list[dict[str, object]]:
        """One row per process: pid, label and peak RSS in MiB, largest first."""
        rows = [{"pid": pid, "process": self.names.get(pid, str(pid)), "peak_rss_mb": round(b / 2**20, 1)}
                for pid, b in self.peaks.items()]
        return sorted(rows, key=lambda r: -float(r["peak_rss_mb"]))

    def max_mb(self, exclude_main: bool = False) -> float:
        """The largest peak over the tree (optionally leaving out the driving process)."""
        values = [b for pid, b in self.peaks.items() if not (exclude_main and pid == self._root.pid)]
        return round(max(values, default=0) / 2**20, 1)

    def main_mb(self) -> float:
        """The peak of the driving process (the client, and the scheduler of a LocalCluster)."""
        return round(self.peaks.get(self._root.pid, 0) / 2**20, 1)


def _describe(proc: psutil.Process) -> str:
    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        cmd = ""
    if "multiprocessing.resource_tracker" in cmd:
        return "resource-tracker"
    if "forkserver" in cmd:
        return "forkserver"
    try:
        return proc.name()
    except psutil.Error:
        return "process"
