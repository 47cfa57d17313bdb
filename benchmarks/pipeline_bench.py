"""W2: the cell-count pipeline on plates S, M and L; the baseline, hcsgraph and the reference side by side."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks import baseline
from benchmarks.cluster import local_client, run_hcsgraph, warm_up, worker_pids
from benchmarks.plates import SEED, cached_plate, plate_bytes, subset
from benchmarks.rss import PeakRSS
from hcsgraph.plate import PlateIndex

BACKENDS = ("zarr", "disk")


def run(workdir: Path, *, sizes: dict[str, int], sites: int, channels: int, image_size: int, n_workers: int,
        reference: dict[str, Any] | None = None, log=print, repeat: int = 2) -> dict[str, Any]:
    """Every (size, backend) with the baseline and hcsgraph; rows carry wall time, throughput, RSS, ratios."""
    largest = max(sizes.values())
    started = time.perf_counter()
    full = cached_plate(workdir / "plates", largest, sites, channels, image_size)
    log(f"W2 plate: {largest} wells x {sites} sites x {channels} channels of {image_size}^2 uint16 "
        f"({time.perf_counter() - started:.1f} s to generate or find)")
    plates = {name: subset(full, n) for name, n in sizes.items()}
    tiny = subset(cached_plate(workdir / "plates", 1, 1, 1, 64), 1)
    runs = workdir / "runs"
    rows: list[dict[str, Any]] = []

    # Both systems stay up for the whole workload and take turns on each plate, `repeat` times;
    # each row keeps its best run. On a shared 2-core machine the speed drifts by tens of percent
    # over minutes, so interleaving keeps the side-by-side ratios fair.
    pool = baseline.start_pool(n_workers)
    pool_pids = {pid: f"pool-{i}" for i, pid in enumerate(baseline.pool_pids(pool))}
    try:
        with local_client(n_workers) as client:
            for backend in BACKENDS:  # untimed warm-up of both systems
                baseline.run(pool, tiny.table, runs / f"baseline-warmup-{backend}", backend)
            warm_up(client, tiny, runs)
            pids = worker_pids(client)
            for name, plate in plates.items():
                for backend in BACKENDS:
                    best: dict[str, dict[str, Any]] = {}
                    for _ in range(repeat):
                        for result in (_baseline_row(pool, pool_pids, plate, name, backend, runs),
                                       _hcsgraph_row(client, pids, plate, name, backend, runs)):
                            system = result["system"]
                            if system not in best or result["wall_s"] < best[system]["wall_s"]:
                                best[system] = result
                    for system in ("baseline", "hcsgraph"):
                        best[system]["runs"] = repeat
                        rows.append(best[system])
                        log(_line(rows[-1]))
    finally:
        pool.shutdown()

    if reference is not None:
        rows.extend(reference.get("rows", []))
    _add_ratios(rows)
    shutil.rmtree(runs, ignore_errors=True)
    return {"plate": {"sites": sites, "channels": channels, "image_size": image_size, "dtype": "uint16",
                      "wells": sizes, "seed": SEED},
            "n_workers": n_workers,
            "warm_up": "Pool and cluster are started before timing, then each system does one untimed run "
                       "per output backend on a 1-well 64x64 plate, so process start-up and imports are not "
                       "timed; hcsgraph wall time includes compiling the graph. The two systems take turns "
                       f"on each plate {repeat} times and each row is the best of its runs",
            "rows": rows}


def _measure(plate: PlateIndex, name: str, backend: str, system: str, monitor: PeakRSS, wall: float,
             cells: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    n_images = len(plate)
    megabytes = plate_bytes(plate) / 1e6
    return {
        "system": system, "size": name, "backend": backend, "wells": len(plate.wells), "images": n_images,
        "wall_s": round(wall, 3), "images_per_s": round(n_images / wall, 2), "mb_per_s": round(megabytes / wall, 1),
        "s_per_well": round(wall / len(plate.wells), 4),
        "peak_rss_worker_mb": monitor.max_mb(exclude_main=True), "peak_rss_main_mb": monitor.main_mb(),
        "processes": monitor.report(), "cells": cells, **(extra or {}),
    }


def _baseline_row(pool, pids: dict[int, str], plate: PlateIndex, name: str, backend: str, runs: Path) -> dict:
    output = runs / f"baseline-{name}-{backend}"
    if output.exists():
        shutil.rmtree(output)
    with PeakRSS(pids) as monitor:
        start = time.perf_counter()
        counts = baseline.run(pool, plate.table, output, backend)
        wall = time.perf_counter() - start
    return _measure(plate, name, backend, "baseline", monitor, wall, sum(c for *_, c in counts))


def _hcsgraph_row(client, pids: dict[int, str], plate: PlateIndex, name: str, backend: str, runs: Path) -> dict:
    output = runs / f"hcsgraph-{name}-{backend}"
    with PeakRSS(pids) as monitor:
        outcome = run_hcsgraph(client, plate, output, backend)
    wall = outcome.pop("wall_s")
    cells = outcome.pop("cells")
    return _measure(plate, name, backend, "hcsgraph", monitor, wall, cells,
                    {"compile_s": round(outcome["compile_s"], 3), "tasks": outcome["tasks"]})


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """Throughput ratios (other's wall time / this row's: > 1 is faster) and per-well scaling from S."""
    def find(system: str, size: str, backend: str) -> dict | None:
        return next((r for r in rows if (r["system"], r["size"], r["backend"]) == (system, size, backend)
                     and "wall_s" in r), None)

    first_size = rows[0]["size"] if rows else None
    for row in rows:
        if "wall_s" not in row:
            continue
        for other, field in (("baseline", "ratio_to_baseline"), ("reference", "ratio_to_reference")):
            match = find(other, row["size"], row["backend"])
            row[field] = round(match["wall_s"] / row["wall_s"], 3) if match else None
        base = find(row["system"], first_size, row["backend"])
        row["per_well_vs_first_size"] = round(row["s_per_well"] / base["s_per_well"], 3) if base else None
        twin = find(row["system"], row["size"], "disk" if row["backend"] == "zarr" else "zarr")
        row["zarr_over_disk"] = None if twin is None else round(
            (row if row["backend"] == "zarr" else twin)["wall_s"] / (twin if row["backend"] == "zarr" else row)["wall_s"], 3)


def _line(row: dict[str, Any]) -> str:
    return (f"  {row['system']:9s} {row['size']} {row['backend']:4s} {row['images']:5d} images "
            f"{row['wall_s']:8.2f} s  {row['images_per_s']:7.1f} img/s  worker RSS {row['peak_rss_worker_mb']} MB")
