"""The `hcsgraph` command: demo, run, info, convert, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from click.testing import CliRunner

from hcsgraph.cli import main
from hcsgraph.plate.reader import read_plane
from hcsgraph.plate.synthetic import make_plate


@pytest.fixture(scope="module")
def tiff_plate(tmp_path_factory):
    return make_plate(tmp_path_factory.mktemp("cli") / "plate", n_wells=2, sites=2, channels=2, size=(96, 96),
                      seed=5)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hcsgraph.cli", *args], capture_output=True, text=True,
                          timeout=240)


def test_info_describes_the_plate(tiff_plate):
    result = CliRunner().invoke(main, ["info", str(tiff_plate.path)])
    assert result.exit_code == 0, result.output
    assert "images: 8" in result.output and "wells: 2" in result.output
    assert "(96, 96)" in result.output and "uint16" in result.output
    assert "DAPI" in result.output


def test_info_bad_plate_path(tmp_path):
    result = CliRunner().invoke(main, ["info", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "missing" in result.output


def test_run_a_pipeline_file(tiff_plate, tmp_path):
    pipeline_file = tmp_path / "smooth.py"
    pipeline_file.write_text(textwrap.dedent("""
        from hcsgraph import FunctionStep, Pipeline

        def halve(stack):
            return stack // 2

        pipeline = Pipeline([FunctionStep(halve), FunctionStep("threshold_otsu")], name="halve")
    """))
    out = tmp_path / "out"
    proc = _run("run", str(pipeline_file), str(tiff_plate.path), "-o", str(out), "--workers", "2",
                "--backend", "disk", "--no-fuse")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "complete" in proc.stdout
    assert json.loads((out / "run.json").read_text())["config"]["fuse_tasks"] is False
    tif = out / "images" / "A01" / "A01_s1_w1_z1_t1.tif"
    import tifffile

    from hcsgraph.io import FileManager

    mask = FileManager().load_array(str(tif), "disk")
    assert mask.dtype == bool and mask.shape == (96, 96) and mask.any()
    assert np.array_equal(tifffile.imread(tif), mask.astype(np.uint8))  # Fiji sees 0/1 uint8
    # again without --overwrite: a clear error, nothing lost
    again = _run("run", str(pipeline_file), str(tiff_plate.path), "-o", str(out), "--workers", "1")
    assert again.returncode == 2
    assert "overwrite" in again.stderr and tif.exists()


def test_run_bad_pipeline_file(tiff_plate, tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("this is not python\n")
    result = CliRunner().invoke(main, ["run", str(bad), str(tiff_plate.path), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "bad.py" in result.output and "failed to load" in result.output
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    result = CliRunner().invoke(main, ["run", str(empty), str(tiff_plate.path), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "must define" in result.output


def test_unreachable_scheduler_times_out_with_a_message(tiff_plate, tmp_path):
    pipeline_file = tmp_path / "p.py"
    pipeline_file.write_text("from hcsgraph import FunctionStep, Pipeline\n"
                             "pipeline = Pipeline([FunctionStep('gaussian_filter')], name='p')\n")
    result = CliRunner().invoke(main, ["run", str(pipeline_file), str(tiff_plate.path), "-o", str(tmp_path / "o"),
                                       "--scheduler", "tcp://127.0.0.1:9", "--timeout", "2"])
    assert result.exit_code == 2
    assert "cannot reach the scheduler at tcp://127.0.0.1:9" in result.output


def test_convert_writes_an_ome_zarr_plate(tiff_plate, tmp_path):
    out = tmp_path / "plate.ome.zarr"
    proc = _run("convert", str(tiff_plate.path), "-o", str(out), "--workers", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    from ome_zarr_models import open_ome_zarr

    group = zarr.open_group(out, mode="r")
    assert type(open_ome_zarr(group)).__name__ == "HCS"
    truth = tiff_plate.ground_truth.query("well == 'A02' and site == 2 and channel == 2")["path"].iloc[0]
    assert np.array_equal(group["A/2/1/0"][0, 1, 0], read_plane(truth))


def test_demo_counts_cells_against_ground_truth(tmp_path):
    proc = _run("demo", "--wells", "2", "--sites", "2", "--channels", "1", "--size", "192", "--workers", "2",
                "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "within ±10% of the true count" in proc.stdout
    assert "Dashboard: http" in proc.stdout
    counts = pd.read_csv(Path(tmp_path) / "results" / "cell_counts.csv")
    assert len(counts) == 4
    assert (Path(tmp_path) / "results" / "plate.ome.zarr" / "zarr.json").exists()
