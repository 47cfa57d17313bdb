"""Object tables at scale: 10^6 objects written as Parquet parts, assembled and summarised per well.

    python -m benchmarks.objects_bench                       # 10^6 objects, 384 parts, 2 writer processes
    python -m benchmarks.objects_bench --objects 100000 --measure-planes 8 --out results/objects.json

Three phases, each in its own processes so that their peak memory is their own:

1. **write**: ``--workers`` processes each build one group's rows at a time (a list of dicts shaped
   like ``measure_objects`` rows: two object sets, two channels, 31 columns) and write them with
   the ``objects`` materializer (one part per group, partitioned by well), as pipeline tasks do.
   No process ever holds more than one part.
2. **summarize**: a fresh process assembles the dataset (footers only) and runs
   ``summarize_per_well`` on 4 features by ``objects``: counts and means stream batch by batch,
   medians hold one well's feature values.
3. **measure** (``--measure-planes N``): ``measure_objects`` on N 512x512 label planes with ~300
   objects each and two intensity channels, with and without the shape features.

Reported: objects per second (wall, and per CPU second inside the materializer) and peak RSS
(``ru_maxrss``) of each process, next to the Arrow size the whole table would have in memory.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = ["area_um2", "DAPI_mean", "GFP_mean", "eccentricity"]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kilobytes on Linux


def group_rows(well: str, site: int, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` rows like measure_objects_with_labels writes: half nuclei, half their cells."""
    rng = np.random.default_rng(seed)
    half = n // 2
    rows = []
    for objects, count, slice_index in (("nuclei", half, 0), ("cells", n - half, 1)):
        area = rng.integers(40, 400, count)
        cy, cx = rng.uniform(0, 2048, count), rng.uniform(0, 2048, count)
        dapi, gfp = rng.normal(900, 120, count), rng.normal(600, 200, count)
        for i in range(count):
            rows.append({
                "site": site, "channel": slice_index + 1, "z": 1, "t": 1, "slice_index": slice_index,
                "objects": objects, "label": i + 1, "centroid_y": cy[i], "centroid_x": cx[i],
                "centroid_y_um": cy[i] * 0.65, "centroid_x_um": cx[i] * 0.65, "area": int(area[i]),
                "area_um2": area[i] * 0.4225, "bbox_min_y": int(cy[i]) - 8, "bbox_min_x": int(cx[i]) - 8,
                "bbox_max_y": int(cy[i]) + 8, "bbox_max_x": int(cx[i]) + 8, "perimeter": 3.5 * area[i] ** 0.5,
                "eccentricity": 0.5, "solidity": 0.95, "DAPI_mean": dapi[i], "DAPI_median": dapi[i],
                "DAPI_min": dapi[i] - 300, "DAPI_max": dapi[i] + 300, "DAPI_std": 40.0,
                "DAPI_integrated": dapi[i] * area[i], "GFP_mean": gfp[i], "GFP_median": gfp[i],
                "GFP_min": gfp[i] - 200, "GFP_max": gfp[i] + 200, "GFP_std": 30.0,
            })
    return rows


def _write_part(job: tuple[str, str, int, int, int]) -> tuple[int, float, float, float, int]:
    """Build one group's rows and write them as its part.

    Returns (rows, CPU seconds building the rows, CPU seconds in the materializer, peak RSS MB, Arrow bytes).
    """
    import pyarrow.parquet as pq

    from hcsgraph.io import FileManager
    from hcsgraph.pipeline.tables import table_materializer

    root, well, site, n, seed = job
    start = time.process_time()  # CPU seconds: robust to other processes sharing the cores
    rows = group_rows(well, site, n, seed)
    built = time.process_time()
    path = table_materializer(plate="bench", pipeline="objects-bench")(rows, f"{root}/{well}_site{site}", FileManager())
    written = time.process_time()
    del rows
    return n, built - start, written - built, _peak_rss_mb(), int(pq.read_table(path).nbytes)


def write_phase(root: Path, n_objects: int, wells: int, sites: int, workers: int) -> dict[str, Any]:
    names = [f"{chr(ord('A') + w // 12)}{w % 12 + 1:02d}" for w in range(wells)]
    groups = [(w, s) for w in names for s in range(1, sites + 1)]
    base, extra = divmod(n_objects, len(groups))
    jobs = [(str(root), w, s, base + (1 if i < extra else 0), i) for i, (w, s) in enumerate(groups)]
    start = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        results = list(pool.map(_write_part, jobs, chunksize=4))
    wall = time.perf_counter() - start
    rows = sum(r[0] for r in results)
    materialize_s = sum(r[2] for r in results)
    return {
        "objects": rows, "parts": len(jobs), "objects_per_part": base, "workers": workers, "wall_s": round(wall, 2),
        "objects_per_s": round(rows / wall), "build_rows_cpu_s": round(sum(r[1] for r in results), 2),
        "materialize_cpu_s": round(materialize_s, 2), "materialize_objects_per_cpu_s": round(rows / materialize_s),
        "peak_rss_writer_mb": round(max(r[3] for r in results), 1),
        "whole_table_arrow_mb": round(sum(r[4] for r in results) / 2**20, 1),
        "on_disk_mb": round(sum(f.stat().st_size for f in root.rglob("*.parquet")) / 2**20, 1),
    }


def _summarize(root: str) -> dict[str, Any]:
    import pyarrow as pa

    from hcsgraph.pipeline.tables import assemble_parquet_dataset, summarize_per_well

    baseline = _peak_rss_mb()
    cpu = time.process_time()
    start = time.perf_counter()
    dataset = assemble_parquet_dataset(root)
    assembled = time.perf_counter() - start
    summary = summarize_per_well(dataset, FEATURES, by=["objects"])
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu
    objects = int(summary["object_count"].sum())
    return {"objects": objects, "wells": int(summary["well"].nunique()), "assemble_s": round(assembled, 3),
            "wall_s": round(wall, 2), "objects_per_s": round(objects / wall), "cpu_s": round(cpu, 2),
            "objects_per_cpu_s": round(objects / cpu), "rss_at_start_mb": round(baseline, 1),
            "peak_rss_mb": round(_peak_rss_mb(), 1),
            "arrow_pool_peak_mb": round(pa.default_memory_pool().max_memory() / 2**20, 1)}


def summarize_phase(root: Path) -> dict[str, Any]:
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_summarize, str(root)).result()


def _measure(planes: int) -> dict[str, Any]:
    from skimage.draw import disk

    import hcsgraph.functions as hf

    rng = np.random.default_rng(0)
    labels = np.zeros((planes, 512, 512), dtype=np.int32)
    for plane in labels:
        for value in range(1, 301):
            rr, cc = disk(tuple(rng.integers(10, 502, 2)), rng.integers(5, 12), shape=plane.shape)
            plane[rr, cc] = value
    dapi = rng.integers(0, 4000, labels.shape).astype(np.uint16)
    gfp = rng.integers(0, 4000, labels.shape).astype(np.uint16)
    out: dict[str, Any] = {"planes": planes}
    hf.get("measure_objects")(labels[:1], intensity={"DAPI": dapi[:1]})  # imports and first-call costs
    for shape_features in (True, False):
        start, cpu = time.perf_counter(), time.process_time()
        _, rows = hf.get("measure_objects")(labels, intensity={"DAPI": dapi, "GFP": gfp}, pixel_size_um=0.65,
                                            shape_features=shape_features)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        key = "with_shape" if shape_features else "without_shape"
        out[key] = {"objects": len(rows), "wall_s": round(wall, 2), "objects_per_s": round(len(rows) / wall),
                    "objects_per_cpu_s": round(len(rows) / cpu)}
    out["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return out


def measure_phase(planes: int) -> dict[str, Any]:
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_measure, planes).result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--wells", type=int, default=96)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--measure-planes", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="hcsgraph-objects-bench-"))
    root = work / "objects"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    results: dict[str, Any] = {"write": write_phase(root, args.objects, args.wells, args.sites, args.workers)}
    print("write     ", json.dumps(results["write"]), flush=True)
    results["summarize"] = summarize_phase(root)
    print("summarize ", json.dumps(results["summarize"]), flush=True)
    if args.measure_planes:
        results["measure"] = measure_phase(args.measure_planes)
        print("measure   ", json.dumps(results["measure"]), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
