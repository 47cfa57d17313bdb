"""The `hcsgraph` command: demo, run, info, convert, and its errors."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from click.testing import CliRunner

from hcsgraph.cli import main
from hcsgraph.plate.reader import read_plane
from hcsgraph.plate.synthetic import make_plate

from .conftest import error_line


def test_info_describes_the_plate(tiff_plate):
    result = CliRunner().invoke(main, ["info", str(tiff_plate.path)])
    assert result.exit_code == 0, result.output
    summary = result.output.splitlines()[0]
    assert "shape=96x96" in summary and "shape=?" not in summary
    assert "images: 8" in result.output and "wells: 2" in result.output
    assert "(96, 96)" in result.output and "uint16" in result.output
    assert "DAPI" in result.output


def test_info_says_pixel_size_unknown_for_an_uncalibrated_plate_and_its_output(tmp_path):
    from hcsgraph import FunctionStep, Pipeline
    from hcsgraph.plate import open_plate

    plate = make_plate(tmp_path / "plate", n_wells=1, sites=1, channels=1, size=(32, 32), seed=1)  # .HTD: no size
    lines = CliRunner().invoke(main, ["info", str(plate.path)]).output.splitlines()
    assert "pixel size: unknown" in lines
    result = Pipeline([FunctionStep("gaussian_filter")], name="p").compile(
        open_plate(plate.path), tmp_path / "out").compute(scheduler="threads")
    output = CliRunner().invoke(main, ["info", result.image_store])
    assert output.exit_code == 0, output.output
    assert "pixel size: unknown" in output.output.splitlines() and "1.0 µm" not in output.output
    given = Pipeline([FunctionStep("gaussian_filter")], name="p").compile(
        open_plate(plate.path, pixel_size_um=0.65), tmp_path / "out2").compute(scheduler="threads")
    assert "pixel size: 0.65 µm" in CliRunner().invoke(main, ["info", given.image_store]).output.splitlines()


def test_info_bad_plate_path(tmp_path):
    result = CliRunner().invoke(main, ["info", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "missing" in result.output


def test_run_a_pipeline_file(cli, tiff_plate, tmp_path):
    pipeline_file = tmp_path / "smooth.py"
    pipeline_file.write_text(textwrap.dedent("""
        from hcsgraph import FunctionStep, Pipeline

        def halve(stack):
            return stack // 2

        pipeline = Pipeline([FunctionStep(halve), FunctionStep("threshold_otsu")], name="halve")
    """))
    out = tmp_path / "out"
    proc = cli("run", str(pipeline_file), str(tiff_plate.path), "-o", str(out), "--workers", "2",
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
    again = cli("run", str(pipeline_file), str(tiff_plate.path), "-o", str(out), "--workers", "1")
    assert again.returncode == 2 and tif.exists()
    line = error_line(again.stderr)
    assert line.startswith(f"Error: output {out} already holds results")
    assert line.endswith("pass --overwrite to replace it or --resume to finish the missing wells")


def test_run_bad_plate_path(tmp_path):
    pipeline_file = tmp_path / "p.py"
    pipeline_file.write_text("from hcsgraph import FunctionStep, Pipeline\n"
                             "pipeline = Pipeline([FunctionStep('gaussian_filter')], name='p')\n")
    result = CliRunner().invoke(main, ["run", str(pipeline_file), str(tmp_path / "missing"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "missing" in error_line(result.stderr)


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


def test_convert_writes_an_ome_zarr_plate(cli, tiff_plate, tmp_path):
    out = tmp_path / "plate.ome.zarr"
    proc = cli("convert", str(tiff_plate.path), "-o", str(out), "--workers", "2", "--ome-zarr-version", "0.5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    from ome_zarr_models import open_ome_zarr

    assert json.loads((out / "zarr.json").read_text())["attributes"]["ome"]["version"] == "0.5"
    group = zarr.open_group(out, mode="r")
    assert type(open_ome_zarr(group)).__name__ == "HCS"
    truth = tiff_plate.ground_truth.query("well == 'A02' and site == 2 and channel == 2")["path"].iloc[0]
    assert np.array_equal(group["A/2/1/0"][0, 1, 0], read_plane(truth))


def test_demo_counts_cells_against_ground_truth(cli, tmp_path):
    proc = cli("demo", "--wells", "2", "--sites", "2", "--channels", "1", "--size", "192", "--workers", "2",
                "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "within ±10% of the true count" in proc.stdout
    assert "Dashboard: http" in proc.stdout
    counts = pd.read_csv(Path(tmp_path) / "results" / "cell_counts.csv")
    assert len(counts) == 4
    assert (Path(tmp_path) / "results" / "plate.ome.zarr" / "zarr.json").exists()


def _arrays(store: Path) -> dict[str, np.ndarray]:
    """Every array of a Zarr hierarchy by path."""
    found: dict[str, np.ndarray] = {}

    def walk(group: zarr.Group, prefix: str) -> None:
        for name, array in group.arrays():
            found[prefix + name] = array[...]
        for name, child in group.groups():
            walk(child, f"{prefix}{name}/")

    walk(zarr.open_group(store, mode="r"), "")
    return found


def test_convert_ome_zarr_04_and_resume(cli, tiff_plate, tmp_path):
    from hcsgraph.config import MaterializationBackend
    from hcsgraph.pipeline.layout import OutputLayout

    out = tmp_path / "plate.ome.zarr"
    first = cli("convert", str(tiff_plate.path), "-o", str(out), "--workers", "1", "--ome-zarr-version", "0.4")
    assert first.returncode == 0, first.stderr[-3000:]
    attrs = json.loads((out / ".zattrs").read_text())
    assert attrs["plate"]["version"] == "0.4"
    assert json.loads((out / ".zgroup").read_text())["zarr_format"] == 2 and not (out / "zarr.json").exists()
    full = _arrays(out)
    assert any(k.startswith("A/2/") for k in full)

    # Lose well A02: its completion marker and its pixels (the arrays' metadata stays).
    marker = Path(OutputLayout(str(out), MaterializationBackend.ZARR).marker_path("A02"))
    assert marker.is_file()
    marker.unlink()
    for chunk in (out / "A" / "2").rglob("*"):
        if chunk.is_file() and not chunk.name.startswith(".") and chunk.name != "zarr.json":
            chunk.unlink()
    assert not all(np.array_equal(full[k], v) for k, v in _arrays(out).items())

    # Without --resume or --overwrite: the CLI's words, nothing touched.
    refused = cli("convert", str(tiff_plate.path), "-o", str(out), "--workers", "1")
    assert refused.returncode == 2
    assert "pass --overwrite to replace it or --resume to finish the missing wells" in error_line(refused.stderr)
    # --resume keeps the OME-Zarr 0.4 it finds; asking for 0.5 on top of it is refused.
    mixed = cli("convert", str(tiff_plate.path), "-o", str(out), "--resume", "--ome-zarr-version", "0.5")
    assert mixed.returncode == 2 and "holds OME-Zarr 0.4 images" in error_line(mixed.stderr)

    again = cli("convert", str(tiff_plate.path), "-o", str(out), "--workers", "1", "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Kept 1 well an earlier conversion completed" in again.stdout
    wells = {w["well"]: w["status"] for w in json.loads((out / "run.json").read_text())["wells"]}
    assert wells == {"A01": "skipped", "A02": "complete"}
    resumed = _arrays(out)
    assert resumed.keys() == full.keys()
    assert all(np.array_equal(full[k], resumed[k]) for k in full)
    assert json.loads((out / ".zattrs").read_text())["plate"]["version"] == "0.4"


def test_run_writes_ome_zarr_04(cli, tiff_plate, tmp_path):
    pipeline_file = tmp_path / "halve.py"
    pipeline_file.write_text("from hcsgraph import FunctionStep, Pipeline\n\n"
                             "def halve(stack):\n    return stack // 2\n\n"
                             "pipeline = Pipeline([FunctionStep(halve)], name='halve')\n")
    out = tmp_path / "out"
    proc = cli("run", str(pipeline_file), str(tiff_plate.path), "-o", str(out), "--workers", "1",
                "--ome-zarr-version", "0.4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = out / "plate.ome.zarr"
    assert json.loads((store / ".zattrs").read_text())["plate"]["version"] == "0.4"
    assert json.loads((store / "A" / "1" / ".zattrs").read_text())["well"]["version"] == "0.4"
    assert not (store / "zarr.json").exists()
    truth = tiff_plate.ground_truth.query("well == 'A01' and site == 1 and channel == 1")["path"].iloc[0]
    assert np.array_equal(zarr.open_group(store, mode="r")["A/1/0/0"][0, 0, 0], read_plane(truth) // 2)
