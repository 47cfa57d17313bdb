"""Run the benchmark suite and write ``results/<date>.json`` and ``RESULTS.md``.

``python -m benchmarks.run [--quick] [--workloads W1,W2,W3,W4] [--sizes S,M,L] [--with-reference]
[--workdir DIR] [--out DIR]``. ``--quick`` shrinks every workload to a smoke run of seconds and writes
``<date>-quick.json`` and ``RESULTS-quick.md`` instead, leaving the real results alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import compile_bench, io_bench, machine, memory_bench, pipeline_bench, report

HERE = Path(__file__).resolve().parent
WORKLOADS = ("W1", "W2", "W3", "W4")
SIZES = {"S": 4, "M": 24, "L": 96}

FULL: dict[str, Any] = {
    "W1": {"n": 200, "size": 512, "repeat": 3},
    "W2": {"sites": 4, "channels": 2, "image_size": 1024},
    "W3": {"wells": 384, "sites": 9, "channels": 4, "repeat": 3},
    "W4": {"wells": 96, "repeat": 2, "sites": 4, "channels": 2, "image_size": 1024, "worker_limit_mb": 400},
}
QUICK: dict[str, Any] = {
    "W1": {"n": 10, "size": 64, "repeat": 1},
    "W2": {"sites": 2, "channels": 1, "image_size": 96},
    "W3": {"wells": 8, "sites": 2, "channels": 2, "repeat": 1},
    "W4": {"wells": 2, "repeat": 2, "sites": 1, "channels": 1, "image_size": 96, "worker_limit_mb": 1024},
}
QUICK_SIZES = {"S": 1, "M": 2, "L": 3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of the whole suite")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset of W1,W2,W3,W4")
    parser.add_argument("--sizes", default="S,M,L", help="W2 plate sizes to run (S=4, M=24, L=96 wells)")
    parser.add_argument("--with-reference", action="store_true",
                        help="install the reference system in benchmarks/.venv-reference and run it in W2")
    parser.add_argument("--workers", type=int, default=None, help="processes per system (default: one per core)")
    parser.add_argument("--workdir", default=None,
                        help="scratch folder for plates and outputs (plates are kept and reused between runs)")
    parser.add_argument("--out", default=str(HERE), help="where results/ and RESULTS.md go (default: benchmarks/)")
    args = parser.parse_args(argv)
    args.workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    unknown = sorted(set(args.workloads) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; expected some of {list(WORKLOADS)}")
    args.sizes = [s.strip().upper() for s in args.sizes.split(",") if s.strip()]
    if not args.sizes or set(args.sizes) - set(SIZES):
        parser.error(f"--sizes {','.join(args.sizes)}: expected some of S,M,L")
    return args


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run(args: argparse.Namespace, log=print) -> dict[str, Any]:
    """Run the selected workloads and return the results document."""
    params = QUICK if args.quick else FULL
    sizes_table = QUICK_SIZES if args.quick else SIZES
    n_workers = args.workers or usable_cores()
    workdir = Path(args.workdir or Path(tempfile.gettempdir()) / "hcsgraph-bench")
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "date": dt.date.today().isoformat(), "quick": args.quick,
        "command": "python -m benchmarks.run " + shlex.join(sys.argv[1:]) if sys.argv[1:] else
        "python -m benchmarks.run", "machine": machine.describe(), "n_workers": n_workers, "workloads": {},
    }
    w = results["workloads"]
    if "W1" in args.workloads:
        log("W1: FileManager save_batch / load_batch")
        w["W1"] = io_bench.run(workdir=str(workdir), **params["W1"])
    if "W2" in args.workloads:
        log("W2: cell-count pipeline")
        sizes = {s: sizes_table[s] for s in ("S", "M", "L") if s in args.sizes}
        reference = None
        if args.with_reference:
            from benchmarks import reference as ref

            reference = ref.run(workdir, sizes=sizes, n_workers=n_workers, log=log, **params["W2"])
        w["W2"] = pipeline_bench.run(workdir, sizes=sizes, n_workers=n_workers, reference=reference, log=log,
                                     **params["W2"])
        w["W2"]["reference"] = ({k: v for k, v in reference.items() if k != "rows"} if reference else
                                {"status": "not requested", "message": "run with --with-reference"})
    if "W3" in args.workloads:
        log("W3: compile only")
        w["W3"] = compile_bench.run(workdir, log=log, **params["W3"])
    if "W4" in args.workloads:
        log("W4: memory")
        w["W4"] = memory_bench.run(workdir, n_workers=n_workers, log=log, **params["W4"])
    results["total_s"] = round(time.perf_counter() - started, 1)
    return results


def write(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write the JSON and the markdown atomically; returns their paths."""
    suffix = "-quick" if results["quick"] else ""
    json_path = out / "results" / f"{results['date']}{suffix}.json"
    md_path = out / f"RESULTS{suffix}.md"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    for path, text in ((json_path, json.dumps(results, indent=1, default=str)), (md_path, report.render(results))):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return json_path, md_path


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = run(args)
    json_path, md_path = write(results, Path(args.out))
    print(f"wrote {json_path} and {md_path} ({results['total_s']} s)")


if __name__ == "__main__":
    main()
