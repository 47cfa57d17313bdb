"""A LocalCluster started (and warmed up) before any timing, and the hcsgraph side of a run."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hcsgraph.config import GlobalPipelineConfig, VFSConfig
from hcsgraph.demo import cell_count_pipeline
from hcsgraph.plate import PlateIndex


@contextmanager
def local_client(n_workers: int, memory_limit: str | int | None = None) -> Iterator[Any]:
    """A Client on hcsgraph's local cluster (``hcsgraph.gpu.local_cluster``, the embedded default)
    of ``n_workers`` processes with one thread each."""
    from distributed import Client

    from hcsgraph.gpu import local_cluster

    kwargs: dict[str, Any] = {"n_workers": n_workers, "threads_per_worker": 1, "processes": True,
                              "dashboard_address": ":0"}
    if memory_limit is not None:
        kwargs["memory_limit"] = memory_limit
    with local_cluster(**kwargs) as cluster, Client(cluster) as client:
        client.wait_for_workers(n_workers)
        yield client


def worker_pids(client: Any) -> dict[int, str]:
    """pid → ``worker-<i>`` for every worker process of the client's cluster."""
    pids = client.run(os.getpid)
    return {pid: f"dask-worker-{i}" for i, pid in enumerate(sorted(pids.values()))}


def run_hcsgraph(client: Any, plate: PlateIndex, output: Path, backend: str,
                 vfs: VFSConfig | None = None) -> dict[str, Any]:
    """Compile and run the cell-count pipeline; wall time covers compile and compute."""
    if output.exists():
        shutil.rmtree(output)
    config = GlobalPipelineConfig(vfs=vfs or VFSConfig(materialization_backend=backend))
    start = time.perf_counter()
    graph = cell_count_pipeline().compile(plate, output, config, overwrite=True)
    compiled = time.perf_counter()
    result = client.compute(graph).result()
    end = time.perf_counter()
    if not result.ok:
        raise RuntimeError(f"hcsgraph run on {plate.name} failed: {result.failures[:3]}")
    counts = result.special_outputs["cell_counts"]
    return {"wall_s": end - start, "compile_s": compiled - start, "tasks": len(graph),
            "cells": int(counts["cell_count"].sum()), "scratch": graph.scratch_backend}


def warm_up(client: Any, plate: PlateIndex, workdir: Path) -> None:
    """One untimed run per backend on a tiny plate, so worker imports are not timed."""
    for backend in ("zarr", "disk"):
        run_hcsgraph(client, plate, workdir / f"warmup-{backend}", backend)
