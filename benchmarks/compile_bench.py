"""W3: compile only. A 384-well x 9-site x 4-channel plate index, no pixels read: graph-build time and tasks."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from hcsgraph.config import GlobalPipelineConfig, VFSConfig
from hcsgraph.demo import cell_count_pipeline
from hcsgraph.plate import PlateIndex
from hcsgraph.plate.index import build_table

ROWS, COLUMNS = 16, 24


def plate_index(root: Path, wells: int = 384, sites: int = 9, channels: int = 4,
                image_shape: tuple[int, int] = (2048, 2048)) -> PlateIndex:
    """An index of ``wells`` x ``sites`` x ``channels`` planes whose files need not exist.

    Shape and dtype are given, so nothing opens a file: compiling it measures the graph build alone.
    """
    records = []
    for i in range(wells):
        well = f"{chr(ord('A') + i // COLUMNS)}{i % COLUMNS + 1:02d}"
        for site in range(1, sites + 1):
            for channel in range(1, channels + 1):
                records.append((well, site, channel, 1, 1, str(root / f"{well}_s{site}_w{channel}.tif")))
    return PlateIndex(build_table(records), name="compile-bench", root=str(root), source_format="imagexpress",
                      image_shape=image_shape, dtype="uint16")


def run(workdir: Path, *, wells: int = 384, sites: int = 9, channels: int = 4, repeat: int = 3,
        log=print) -> dict[str, Any]:
    """Best-of-``repeat`` compile time per output backend, and the task count."""
    started = time.perf_counter()
    index = plate_index(workdir / "w3-plate", wells, sites, channels)
    index_s = time.perf_counter() - started
    rows = []
    for backend in ("zarr", "disk"):
        times = []
        for _ in range(repeat):
            output = workdir / f"w3-out-{backend}"
            shutil.rmtree(output, ignore_errors=True)
            config = GlobalPipelineConfig(vfs=VFSConfig(materialization_backend=backend))
            start = time.perf_counter()
            graph = cell_count_pipeline().compile(index, output, config, overwrite=True)
            times.append(time.perf_counter() - start)
            shutil.rmtree(output, ignore_errors=True)
        rows.append({"backend": backend, "planes": len(index), "wells": wells, "compile_s": round(min(times), 3),
                     "compile_s_all": [round(t, 3) for t in times], "tasks": len(graph),
                     "tasks_by_kind": dict(graph.task_counts())})
        log(f"  compile {backend}: {len(index)} planes -> {len(graph)} tasks in {min(times):.2f} s")
    return {"index_build_s": round(index_s, 3), "rows": rows}
