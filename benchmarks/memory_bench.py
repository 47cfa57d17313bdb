"""W4: memory. A plate at least 3x the workers' combined memory limit runs through to the end.

The workers get a small ``memory_limit`` (dask pauses a worker at 80 % and restarts it at 95 %),
and ``VFSConfig(memory_limit_gb=...)`` is set to the same total, so hcsgraph plans the run
against it and sends intermediates through its scratch Zarr store when they would not fit.
The peak RSS of every process is sampled throughout.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.cluster import local_client, run_hcsgraph, warm_up, worker_pids
from benchmarks.plates import cached_plate, plate_bytes, subset
from benchmarks.rss import PeakRSS
from hcsgraph.config import VFSConfig


def run(workdir: Path, *, wells: int, repeat: int, sites: int, channels: int, image_size: int, n_workers: int,
        worker_limit_mb: int, log=print) -> dict[str, Any]:
    """Run the cell-count pipeline on ``wells * repeat`` wells with ``worker_limit_mb`` per worker."""
    source = cached_plate(workdir / "plates", wells, sites, channels, image_size)
    plate = subset(source, wells, repeat=repeat)
    total_limit = worker_limit_mb * 2**20 * n_workers
    pixels = plate_bytes(plate)
    tiny = subset(cached_plate(workdir / "plates", 1, 1, 1, 64), 1)
    runs = workdir / "w4-runs"
    log(f"W4 plate: {len(plate.wells)} wells, {len(plate)} images, {pixels / 2**30:.2f} GiB of pixels; "
        f"workers: {n_workers} x {worker_limit_mb} MiB ({pixels / total_limit:.1f}x their total)")
    result: dict[str, Any] = {"wells": len(plate.wells), "images": len(plate), "plate_gib": round(pixels / 2**30, 3),
                              "worker_limit_mb": worker_limit_mb, "n_workers": n_workers,
                              "plate_over_total_limit": round(pixels / total_limit, 2),
                              "vfs_memory_limit_gb": round(total_limit / 2**30, 3)}
    try:
        with local_client(n_workers, memory_limit=f"{worker_limit_mb}MiB") as client:
            warm_up(client, tiny, runs)
            pids = worker_pids(client)
            vfs = VFSConfig(materialization_backend="zarr", memory_limit_gb=total_limit / 2**30)
            with PeakRSS(pids) as monitor:
                start = time.perf_counter()
                outcome = run_hcsgraph(client, plate, runs / "w4-out", "zarr", vfs=vfs)
                wall = time.perf_counter() - start
            restarts = sorted(set(worker_pids(client)) - set(pids))
    except Exception as exc:  # noqa: BLE001 - recorded: the workload did not complete
        result.update(completed=False, error=f"{type(exc).__name__}: {exc}")
        log(f"  W4 failed: {result['error']}")
        return result
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    workers = [r for r in monitor.report() if r["process"] != "main"]
    result.update(
        completed=True, wall_s=round(wall, 2), images_per_s=round(len(plate) / wall, 2),
        scratch_store=outcome["scratch"], tasks=outcome["tasks"], cells=outcome["cells"],
        restarted_workers=len(restarts), processes=monitor.report(),
        peak_rss_worker_mb=monitor.max_mb(exclude_main=True), peak_rss_main_mb=monitor.main_mb(),
        all_workers_under_limit=bool(workers) and all(float(r["peak_rss_mb"]) < worker_limit_mb for r in workers),
    )
    log(f"  W4: {wall:.1f} s, scratch={outcome['scratch']}, worker peak {result['peak_rss_worker_mb']} MiB "
        f"(limit {worker_limit_mb}), restarts {len(restarts)}")
    return result
