"""The per-run well state machine, the plate geometry, the completion event and the run annotation."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from hcsgraph.dashboard.annotation import planes_written, run_annotation
from hcsgraph.dashboard.events import run_token, well_event, well_values
from hcsgraph.dashboard.geometry import FORMATS, plate_format, plate_grid, position
from hcsgraph.dashboard.state import PlateRun

TOKEN = "0123456789abcdef0123456789abcdef"


def key(step: str, well: str, *group) -> tuple:
    return (f"{step}-{TOKEN}", well, *group)


def run_with(wells: dict[str, list[tuple]], skipped=()) -> tuple[PlateRun, dict]:
    run = PlateRun(TOKEN, "cell-count", wells=[(w, 2) for w in wells], skipped=skipped, output="/out")
    states = {}
    for well, keys in wells.items():
        for k in keys:
            states[k] = run.add_task(k, well, planes=2 if k[0].startswith("load") else None)
    return run, states


@pytest.mark.parametrize(("fmt", "corner"), [(6, "B03"), (24, "D06"), (96, "H12"), (384, "P24"), (1536, "AF48")])
def test_each_standard_format_is_its_physical_grid(fmt, corner):
    n_rows, n_cols = FORMATS[fmt]
    assert plate_format(["A01", corner]) == fmt
    letters, columns = plate_grid(["A01", corner])
    assert (len(letters), columns) == (n_rows, n_cols) and letters[-1] == corner[:-2]
    assert position(corner) == (n_rows, n_cols)


def test_a_format_hint_wins_and_never_hides_a_well():
    assert plate_grid(["A01", "A02"], 96) == (list("ABCDEFGH"), 12)
    assert plate_grid(["A01", "C05"], 6) == (list("ABC"), 5)  # a wrong hint grows to fit
    assert plate_grid(["A01", "AH50"])[1] == 50  # beyond 1536: the wells' own extent


def test_wells_move_waiting_running_done_and_count_planes_once():
    a, b = [key("load→write", "A01", 1), key("finalize_well", "A01")], [key("load→write", "A02", 1)]
    run, states = run_with({"A01": a, "A02": b})
    well = states[a[0]]
    assert {w.state for w in run.wells.values()} == {"waiting"}
    run.transition(a[0], well, "processing", {})
    assert well.state == "running" and run.wells["A02"].state == "waiting"
    info = {"worker": "tcp://127.0.0.1:1", "startstops": [{"action": "compute", "start": 1.0, "stop": 1.5}],
            "typename": "hcsgraph.pipeline.tasks.WriteReceipt"}
    run.transition(a[0], well, "memory", info)
    run.transition(a[0], well, "memory", info)  # recomputed after a lost worker: counted once
    assert (well.state, well.planes, well.seconds, well.workers) == ("running", "2 / 2", 0.5, ["tcp://127.0.0.1:1"])
    run.transition(a[1], well, "memory", {})
    assert well.state == "done"
    assert run.counts() == {"waiting": 1, "running": 0, "done": 1, "failed": 0, "skipped": 0}


def test_a_failure_result_or_an_error_fails_the_well_and_keeps_it_failed():
    a, b = [key("load→count_cells", "A01", 1), key("finalize_well", "A01")], [key("load", "A02", 1)]
    run, states = run_with({"A01": a, "A02": b})
    run.transition(a[0], states[a[0]], "memory", {"typename": "hcsgraph.pipeline.tasks.Failure"})
    run.transition(a[1], states[a[1]], "memory", {})
    assert run.wells["A01"].state == "failed" and "load→count_cells" in run.wells["A01"].error
    assert run.wells["A01"].planes == "0 / 2"  # a failed write wrote nothing
    run.transition(b[0], states[b[0]], "erred", {"exception_text": "ValueError: bad pixels"})
    assert run.wells["A02"].state == "failed" and run.wells["A02"].error == "load: ValueError: bad pixels"


def test_the_completion_event_settles_state_message_planes_and_values():
    a = [key("load→write", "A01", 1), key("finalize_well", "A01")]
    run, states = run_with({"A01": a, "A02": [key("load", "A02", 1)]}, skipped=["B01"])
    run.report({"run": TOKEN, "well": "A01", "status": "failed", "planes": 0, "seconds": 1.25,
                "errors": [{"step": "load", "group": "A01_channel1", "message": "PlateReadError: truncated"}],
                "values": {}})
    run.transition(a[1], states[a[1]], "memory", {})  # the finalize task lands after its event
    well = run.wells["A01"]
    assert (well.state, well.seconds) == ("failed", 1.25)
    assert well.error == "load (A01_channel1): PlateReadError: truncated"
    run.report({"run": TOKEN, "well": "A02", "status": "done", "planes": 4, "seconds": 0.5, "errors": [],
                "values": {"cell_counts.cell_count (sum)": 12.0}})
    assert run.wells["A02"].state == "done" and run.wells["A02"].values == {"cell_counts.cell_count (sum)": 12.0}
    assert list(run.metrics) == ["cell_counts.cell_count (sum)"]
    assert run.wells["B01"].state == "skipped"
    assert [w.well for w in run.changed_since(0)] == ["A01", "A02"]


def test_the_run_finishes_fails_or_is_cancelled():
    a = [key("load", "A01", 1)]
    run, states = run_with({"A01": a})
    run.transition(a[0], states[a[0]], "forgotten", {})
    assert run.status == "cancelled"
    run, states = run_with({"A01": a})
    run.transition(f"run_cell-count-{TOKEN}", None, "memory", {})
    assert run.status == "done" and run.finished is not None


def test_well_event_is_small_and_numeric():
    status = SimpleNamespace(
        well="B03", status="complete", planes=4, seconds={"load": 0.25, "write": 0.5},
        errors=[], specials={"cell_counts": [
            ("B03_s1", [{"site": 1, "channel": 1, "slice_index": 0, "cell_count": 3, "mean_area": 10.0}]),
            ("B03_s2", pd.DataFrame({"site": [2], "cell_count": [np.int64(5)], "mean_area": [np.float32(20.0)]})),
        ], "flag": [("B03", True)], "score": [("B03", 0.5)]},
    )
    event = well_event(status, TOKEN)
    assert event["status"] == "done" and event["planes"] == 4 and event["seconds"] == 0.75
    assert event["values"] == {
        "cell_counts.cell_count (sum)": 8.0, "cell_counts.cell_count (mean)": 4.0,
        "cell_counts.mean_area (sum)": 30.0, "cell_counts.mean_area (mean)": 15.0,
        "score.score (sum)": 0.5, "score.score (mean)": 0.5,
    }
    failed = SimpleNamespace(well="A01", status="failed", planes=0, seconds={}, specials={},
                             errors=[{"step": "load", "group": "g", "message": "x" * 5000, "files": ["/a"]}] * 9)
    event = well_event(failed, TOKEN)
    assert len(event["errors"]) == 5 and len(event["errors"][0]["message"]) == 1000
    assert well_values({}) == {}


def test_run_token_of_task_keys():
    assert run_token(key("load→count_cells", "A01", 1)) == TOKEN
    assert run_token(f"run_cell-count-{TOKEN}") == TOKEN
    assert run_token(("x",)) is None and run_token(3) is None


def test_the_run_annotation_carries_wells_planes_and_skipped(tmp_path):
    from hcsgraph.demo import cell_count_pipeline
    from hcsgraph.plate.synthetic import make_plate

    plate = make_plate(tmp_path / "plate", wells=["A01", "A02"], sites=2, channels=2, size=(32, 32), seed=1)
    graph = cell_count_pipeline().compile(plate.path, tmp_path / "out")
    marks = run_annotation(graph.tasks, graph.result_key, name="cell-count", output=graph.output,
                           wells=["A01", "A02", "A03"], skipped=["A03"], plate_format=96)
    run = marks.pop(graph.result_key)["run"]
    assert run == {"name": "cell-count", "output": graph.output, "plate_format": 96,
                   "wells": [["A01", 4], ["A02", 4]], "skipped": ["A03"]}
    assert sum(m["planes"] for m in marks.values()) == 8
    assert all(planes_written(graph.tasks[k]) == m["planes"] for k, m in marks.items())
