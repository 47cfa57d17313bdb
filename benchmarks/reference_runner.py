"""Run the cell-count work with the reference system; executed by ``benchmarks/.venv-reference``'s Python.

Usage: ``reference_runner.py '<json request>'`` with plate, wells, output, workers, sigma, radius.
Prints one JSON line: wall_s, cells, backend, peak_rss_mb. It imports only the reference system and
its own dependencies (numpy, scipy, scikit-image), never hcsgraph.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from openhcs.core.memory.decorators import numpy as numpy_func


@numpy_func
def cell_count(stack: np.ndarray, sigma: float = 2.0, radius: int = 2) -> np.ndarray:
    """Gaussian, Otsu, opening, label for every plane: int32 labels."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu
    from skimage.measure import label
    from skimage.morphology import disk

    footprint = disk(radius).astype(bool)
    out = np.zeros(stack.shape, dtype=np.int32)
    for z, plane in enumerate(stack):
        smooth = ndimage.gaussian_filter(plane, sigma, truncate=4.0, mode="reflect")
        mask = smooth > threshold_otsu(smooth)
        opened = ndimage.binary_dilation(ndimage.binary_erosion(mask, footprint, border_value=1), footprint)
        out[z] = label(opened, connectivity=1)
    return out


class _PeakTree:
    """Peak RSS over this process's worker processes, sampled every 50 ms (psutil, when available)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.peaks: dict[int, int] = {}
        try:
            import psutil
        except ImportError:
            return
        root = psutil.Process()

        def loop() -> None:
            while not self.stop.wait(0.05):
                for proc in root.children(recursive=True):
                    try:
                        self.peaks[proc.pid] = max(self.peaks.get(proc.pid, 0), proc.memory_info().rss)
                    except psutil.Error:
                        pass

        threading.Thread(target=loop, daemon=True).start()

    def max_mb(self) -> float | None:
        return round(max(self.peaks.values()) / 2**20, 1) if self.peaks else None


def main() -> None:
    request = json.loads(sys.argv[1])
    import openhcs.processing.func_registry as func_registry
    from objectstate.lazy_factory import ensure_global_config_context
    from openhcs.core.config import GlobalPipelineConfig, MaterializationBackend, PipelineConfig, VFSConfig
    from openhcs.core.orchestrator.orchestrator import PipelineOrchestrator
    from openhcs.core.progress import set_progress_queue
    from openhcs.core.steps.function_step import FunctionStep

    global_config = GlobalPipelineConfig(num_workers=int(request["workers"]),
                                         vfs_config=VFSConfig(materialization_backend=MaterializationBackend.ZARR))
    ensure_global_config_context(GlobalPipelineConfig, global_config)
    if not func_registry._registry_initialized:
        func_registry._auto_initialize_registry()
    queue = multiprocessing.get_context("spawn").Queue()
    drain = threading.Thread(target=lambda: [None for _ in iter(queue.get, None)], daemon=True)
    drain.start()
    set_progress_queue(queue)
    peak = _PeakTree()
    start = time.perf_counter()
    orchestrator = PipelineOrchestrator(plate_path=Path(request["plate"]).resolve(), pipeline_config=PipelineConfig())
    orchestrator.initialize()
    bundle = orchestrator.compile_pipelines([FunctionStep(
        func=(cell_count, {"sigma": float(request["sigma"]), "radius": int(request["radius"])}), name="cell_count")],
                                            well_filter=list(request["wells"]))
    results = orchestrator.execute_compiled_plate(
        bundle, max_workers=int(request["workers"]), progress_queue=queue,
        progress_context={"execution_id": str(uuid.uuid4()), "plate_id": str(request["plate"])})
    wall = time.perf_counter() - start
    peak.stop.set()
    queue.put(None)
    print(json.dumps({"wall_s": wall, "backend": "zarr", "cells": None, "peak_rss_mb": peak.max_mb(), "results": str(results)[:500]}))


if __name__ == "__main__":
    main()
