"""What the plate page costs the scheduler: its CPU time over a 384-well run, with and without the page.

The scheduler runs in its own process (``dask scheduler`` on 127.0.0.1, two ``dask worker``
processes of one thread), so its CPU time is its own: ``psutil``'s user + system time of that
process from submitting the graph to the result. Modes: "without", a plain scheduler; "plugin",
started with ``--preload hcsgraph.dashboard`` (the plugin follows the run, nobody looks);
"page open", the same with the page open in headless Chromium during the run (when Chromium is
installed). Each mode gets fresh processes; the modes take turns, and each is the best of its runs.
With the page, the scheduler also counts the thread CPU time of the page's own code (the
plugin's hooks and the page's refreshes, timed by this module as its ``--preload``): that share
does not move with the machine's load, which on a shared machine moves the ratio by ±30%. The plate is 384 wells of
one 32×32 image, so the run is almost all scheduling: the worst case for the page's share.

    .venv/bin/python -m benchmarks.dashboard_bench [--repeat 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

WELLS = 384


@contextlib.contextmanager
def cluster(workdir: Path, page: bool, workers: int = 2) -> Iterator[tuple[Any, psutil.Process]]:
    """A scheduler process (with the plate page when ``page``) and ``workers`` worker processes."""
    from distributed import Client

    scheduler_file = workdir / f"scheduler-{time.monotonic_ns()}.json"
    python = [sys.executable, "-m"]
    scheduler_args = [*python, "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                      "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)]
    if page:  # the plate page, with its own CPU time counted (see dask_setup below)
        scheduler_args += ["--preload", "benchmarks.dashboard_bench"]
    worker_args = [*python, "distributed.cli.dask_worker", "--scheduler-file", str(scheduler_file),
                   "--host", "127.0.0.1", "--nworkers", str(workers), "--nthreads", "1",
                   "--memory-limit", "1GiB", "--no-dashboard"]
    processes = [subprocess.Popen(scheduler_args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True, cwd=Path(__file__).resolve().parents[1])]
    try:
        _wait_for(scheduler_file)
        processes.append(subprocess.Popen(worker_args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True))
        with Client(scheduler_file=str(scheduler_file), timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
            yield client, psutil.Process(processes[0].pid)
    finally:
        for process in reversed(processes):
            _stop(process)


MODES = {"without": (False, False), "plugin": (True, False), "page open": (True, True)}
"""mode → (the scheduler preloads the plate page, the page is open in Chromium during the run)."""


def measure(client: Any, scheduler: psutil.Process, plate_path: str, output: Path, view: bool) -> dict[str, Any]:
    """Compile (not counted) and run the cell-count pipeline; the scheduler's CPU seconds over the run."""
    from hcsgraph.demo import cell_count_pipeline

    graph = cell_count_pipeline().compile(plate_path, output, overwrite=True)
    with _page_open(client) if view else contextlib.nullcontext(False) as viewing:
        own_before = _own(client)
        before, start = _cpu(scheduler), time.perf_counter()
        result = client.compute(graph).result()
        cpu, wall = _cpu(scheduler) - before, time.perf_counter() - start
        own = {k: round(v - own_before.get(k, 0.0), 4) for k, v in _own(client).items()}
    if not result.ok:
        raise RuntimeError(f"the benchmark run failed: {result.failures[:2]}")
    return {"browser": bool(viewing), "tasks": len(graph), "scheduler_cpu_s": round(cpu, 3),
            "wall_s": round(wall, 3), "scheduler_cpu_ms_per_task": round(1000 * cpu / len(graph), 4),
            "page_own_cpu_s": round(sum(own.values()), 4), "page_own_cpu_by_hook_s": own}


def run(workdir: Path, repeat: int = 2, log: Any = print) -> dict[str, Any]:
    """Every mode, taking turns ``repeat`` times; the best scheduler CPU of each and its ratio to "without"."""
    from hcsgraph.plate.synthetic import make_plate

    plate = make_plate(workdir / "plate384", n_wells=WELLS, plate_format=384, sites=1, channels=1,
                       size=(32, 32), seed=0)
    rows: list[dict[str, Any]] = []
    for i in range(repeat):
        for mode, (page, view) in MODES.items():
            with cluster(workdir, page) as (client, scheduler):
                measure(client, scheduler, plate.path, workdir / "warm", False)  # imports, first-run costs
                row = {"round": i + 1, "mode": mode, **measure(client, scheduler, plate.path, workdir / "out", view)}
            rows.append(row)
            own = f", of which the page's own code {row['page_own_cpu_s']:.3f} s" if page else ""
            log(f"  round {i + 1} {mode:>9}: scheduler {row['scheduler_cpu_s']:.2f} s CPU for {row['tasks']} tasks "
                f"({row['wall_s']:.2f} s wall){own}")
    best = {mode: min(r["scheduler_cpu_s"] for r in rows if r["mode"] == mode) for mode in MODES}
    ratios = {mode: round(best[mode] / best["without"], 4) if best["without"] else float("nan") for mode in MODES}
    share = {mode: round(min(r["page_own_cpu_s"] / r["scheduler_cpu_s"] for r in rows if r["mode"] == mode), 4)
             for mode in ("plugin", "page open")}
    for mode in ("plugin", "page open"):
        log(f"  scheduler CPU {mode} / without the plate page: {ratios[mode]:.3f}x "
            f"({best[mode]:.2f} s / {best['without']:.2f} s); the page's own code: {share[mode]:.1%} of it")
    return {"wells": WELLS, "rows": rows, "best_cpu_s": best, "ratio": ratios, "own_share": share}


@contextlib.contextmanager
def _page_open(client: Any) -> Iterator[bool]:
    """The plate page open in headless Chromium for the duration (False when there is no Chromium)."""
    from hcsgraph.dashboard import plate_page_link
    from hcsgraph.dashboard.browser import Browser, find_chromium

    if find_chromium() is None:
        yield False
        return
    with Browser(width=1200, height=800) as browser:
        browser.open(plate_page_link(client))
        browser.wait_for("window.Bokeh !== undefined && Bokeh.documents.length > 0")
        yield True


OWN_CPU: dict[str, float] = {}
"""Thread CPU seconds spent in each hook of the plugin and in the page's refreshes (scheduler side)."""


def dask_setup(scheduler: Any) -> None:
    """``dask scheduler --preload benchmarks.dashboard_bench``: the plate page, its hooks timed."""
    from hcsgraph.dashboard import dask_setup as add_plate_page
    from hcsgraph.dashboard.page import PlatePage
    from hcsgraph.dashboard.plugin import PlatePagePlugin

    for cls, names in ((PlatePagePlugin, ("update_graph", "transition", "log_event")), (PlatePage, ("refresh",))):
        for name in names:
            setattr(cls, name, _timed(name, getattr(cls, name)))
    add_plate_page(scheduler)


def _timed(name: str, method: Any) -> Any:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.thread_time()  # the scheduler's event loop thread: its CPU only
        try:
            return method(*args, **kwargs)
        finally:
            OWN_CPU[name] = OWN_CPU.get(name, 0.0) + time.thread_time() - start

    return timed


def own_cpu(dask_scheduler: Any = None) -> dict[str, float]:
    """:data:`OWN_CPU` as the scheduler holds it (for ``client.run_on_scheduler``)."""
    return dict(OWN_CPU)


def _own(client: Any) -> dict[str, float]:
    import importlib

    # by reference, also when this file runs as __main__ (a __main__ function would travel by value)
    return client.run_on_scheduler(importlib.import_module("benchmarks.dashboard_bench").own_cpu)


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the scheduler wrote no {path.name} within {timeout:.0f} s")
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process this benchmark started, and its children (its own session)."""
    import signal

    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="hcsgraph-dashboard-bench-"))
    try:
        figures = run(workdir, args.repeat)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
