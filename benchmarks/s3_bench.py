"""W5: the cell-count pipeline reading from and writing to a local S3 API server, against local disk.

Both runs use the same plate (uploaded to a bucket of a ``moto_server`` on 127.0.0.1) and the same
local cluster; they take turns, best of ``repeat``; the row is the S3/disk wall-time ratio. The
server is started and stopped by this script.

    .venv/bin/python -m benchmarks.s3_bench [--wells 4] [--sites 4] [--size 512] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.cluster import local_client
from benchmarks.plates import cached_plate
from hcsgraph import GlobalPipelineConfig, VFSConfig
from hcsgraph.demo import cell_count_pipeline
from hcsgraph.io import location as loc
from hcsgraph.plate import open_plate


def run(workdir: Path, *, wells: int = 4, sites: int = 4, size: int = 512, n_workers: int = 2, repeat: int = 2,
        log=print) -> dict[str, Any]:
    """Local disk → disk and bucket → bucket, same plate and cluster; returns the rows and the ratio."""
    from tests.s3server import start_server, stop_server, unique_prefix, upload_folder

    plate = cached_plate(workdir / "plates", wells, sites, 2, size)
    (workdir / "moto").mkdir(parents=True, exist_ok=True)
    server = start_server(workdir / "moto")
    try:
        options = server.storage_options
        url = unique_prefix("bench-plate")
        upload_folder(plate.root, url, options)
        remote = open_plate(url, storage_options=options)
        pipeline = cell_count_pipeline()
        config = GlobalPipelineConfig(vfs=VFSConfig(materialization_backend="zarr"))
        best: dict[str, float] = {}
        with local_client(n_workers) as client:
            client.compute(pipeline.compile(plate, workdir / "warm", config, overwrite=True)).result()
            for attempt in range(repeat):
                for system, source, output in (("disk", plate, workdir / f"out-{attempt}"),
                                               ("s3", remote, unique_prefix("bench-out"))):
                    start = time.perf_counter()
                    result = client.compute(pipeline.compile(source, output, config, overwrite=True)).result()
                    wall = time.perf_counter() - start
                    if not result.ok:
                        raise RuntimeError(f"{system} run failed: {result.failures[:2]}")
                    best[system] = min(best.get(system, wall), wall)
                    log(f"W5 {system}: {wall:.2f} s")
        requests = len(server.requests())
    finally:
        stop_server(server)
    images = len(plate.table)
    rows = [{"system": s, "wall_s": round(w, 3), "images_per_s": round(images / w, 2)} for s, w in best.items()]
    return {"plate": {"wells": wells, "sites": sites, "channels": 2, "image_size": size, "images": images},
            "rows": rows, "s3_over_disk": round(best["s3"] / best["disk"], 3), "s3_requests": requests,
            "n_workers": n_workers, "runs": repeat}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wells", type=int, default=4)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="hcsgraph-s3-bench-"))
    out = run(workdir, wells=args.wells, sites=args.sites, size=args.size, n_workers=args.workers)
    print(json.dumps(out, indent=2))
    print(f"S3 / local disk wall time: {out['s3_over_disk']:.2f}x ({loc.redact('s3://')} on 127.0.0.1)")


if __name__ == "__main__":
    main()
