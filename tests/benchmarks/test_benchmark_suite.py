"""The benchmark command runs end to end on tiny sizes and writes valid results (no timing is checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_writes_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--workloads", "W2,W3,W4", "--sizes", "S",
         "--workdir", str(tmp_path / "work"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [json_path] = (out / "results").glob("*-quick.json")
    results = json.loads(json_path.read_text())
    assert set(results["workloads"]) == {"W2", "W3", "W4"}
    assert results["machine"]["logical_cores"] >= 1

    rows = results["workloads"]["W2"]["rows"]
    assert {(r["system"], r["size"], r["backend"]) for r in rows} == {
        (system, size, backend) for system in ("baseline", "hcsgraph") for size in ("S",)
        for backend in ("zarr", "disk")
    }
    for row in rows:
        assert row["images"] == row["wells"] * 2  # quick plates: 2 sites x 1 channel
        assert row["wall_s"] > 0 and row["peak_rss_worker_mb"] > 0
    # The same work on the same pixels: every system finds the same number of cells.
    for size in ("S",):
        assert len({r["cells"] for r in rows if r["size"] == size}) == 1
    assert results["workloads"]["W2"]["reference"]["status"] == "not requested"

    [compile_zarr, compile_disk] = results["workloads"]["W3"]["rows"]
    assert compile_zarr["planes"] == 8 * 2 * 2 and compile_zarr["tasks"] == compile_disk["tasks"] > 32

    w4 = results["workloads"]["W4"]
    assert w4["completed"] is True and w4["images"] == 4

    markdown = (out / "RESULTS-quick.md").read_text()
    for heading in ("## Machine", "## Targets", "## W2: cell-count pipeline", "## W3: compile only", "## W4: memory"):
        assert heading in markdown
    assert "| hcsgraph | S | disk |" in markdown


def test_bad_workload_is_rejected() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run", "--workloads", "W9"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "W9" in proc.stderr
