"""Bad input at run time: clear errors, on_error="continue", completion markers, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from hcsgraph import FunctionStep, Pipeline
from hcsgraph.pipeline import StepExecutionError
from hcsgraph.plate import open_plate


def _truncate(path) -> None:
    data = open(path, "rb").read()
    with open(path, "wb") as fh:
        fh.write(data[: len(data) // 3])


def _pipeline() -> Pipeline:
    return Pipeline([FunctionStep("gaussian_filter", sigma=1), FunctionStep("threshold_otsu")], name="seg")


def _bad_file(plate) -> str:
    table = open_plate(plate.path).table
    return table.query("well == 'A02' and site == 2")["path"].iloc[0]


def test_corrupt_tiff_stops_the_run_naming_file_well_and_step(fresh_plate, tmp_path):
    bad = _bad_file(fresh_plate)
    _truncate(bad)
    graph = _pipeline().compile(fresh_plate.path, tmp_path / "o")
    with pytest.raises(StepExecutionError) as info:
        graph.compute(scheduler="sync")
    message = str(info.value)
    assert bad in message and "A02" in message and "load" in message
    assert info.value.well == "A02" and info.value.files == (bad,)
    assert not (tmp_path / "o" / ".hcsgraph" / "wells" / "A02.json").exists()


def test_continue_finishes_other_wells_and_reports_the_failure(fresh_plate, client, tmp_path):
    bad = _bad_file(fresh_plate)
    _truncate(bad)
    graph = _pipeline().compile(fresh_plate.path, tmp_path / "o", on_error="continue")
    result = client.compute(graph).result()
    assert not result.ok
    status = dict(zip(result.wells["well"], result.wells["status"], strict=True))
    assert status == {"A01": "complete", "A02": "failed", "A03": "complete"}
    assert len(result.failures) == 1
    failure = result.failures[0]
    assert failure["well"] == "A02" and failure["step"] == "load" and failure["files"] == [bad]
    wells = tmp_path / "o" / ".hcsgraph" / "wells"
    assert sorted(p.name for p in wells.iterdir()) == ["A01.json", "A03.json"]
    manifest = json.loads((tmp_path / "o" / "run.json").read_text())
    assert manifest["failures"][0]["well"] == "A02"


def test_resume_finishes_what_is_missing_and_keeps_earlier_wells(fresh_plate, tmp_path):
    bad = _bad_file(fresh_plate)
    good = open(bad, "rb").read()
    _truncate(bad)
    out = tmp_path / "o"
    first = _pipeline().compile(fresh_plate.path, out, on_error="continue").compute(scheduler="sync")
    assert list(first.wells["status"]) == ["complete", "failed", "complete"]
    a01_before = zarr.open_group(first.image_store, mode="r")["A/1/0/0"][:]
    marker_before = (out / ".hcsgraph" / "wells" / "A01.json").stat().st_mtime_ns
    with open(bad, "wb") as fh:  # the file is repaired
        fh.write(good)
    graph = _pipeline().compile(fresh_plate.path, out, resume=True)
    assert {k[1] for k in graph.tasks if isinstance(k, tuple) and k[0].startswith("load")} == {"A02"}
    second = graph.compute(scheduler="sync")
    assert list(second.wells["status"]) == ["skipped", "complete", "skipped"]
    store = zarr.open_group(second.image_store, mode="r")
    assert np.array_equal(store["A/1/0/0"][:], a01_before)
    assert store["A/2/1/0"][:].any()  # the repaired well's second site is written now
    assert (out / ".hcsgraph" / "wells" / "A01.json").stat().st_mtime_ns == marker_before
    assert (out / ".hcsgraph" / "wells" / "A02.json").exists()


def test_wrong_shape_from_a_step_names_the_step(fresh_plate, tmp_path):
    def crop(stack):
        return stack[:, :10, :10]

    graph = Pipeline([FunctionStep(crop)], name="p").compile(fresh_plate.path, tmp_path / "o")
    with pytest.raises(StepExecutionError, match=r"step 'crop'.*shape \(2, 10, 10\)"):
        graph.compute(scheduler="sync")


def test_a_failing_function_names_step_and_well(fresh_plate, tmp_path):
    def explode(stack):
        raise RuntimeError("kaboom")

    graph = Pipeline([FunctionStep(explode)], name="p").compile(fresh_plate.path, tmp_path / "o")
    with pytest.raises(StepExecutionError, match=r"step 'explode', well A0[123] .*RuntimeError: kaboom"):
        graph.compute(scheduler="sync")
