"""Linear runs of a group's tasks fused into one task: same results, fewer tasks, exact resources."""

from __future__ import annotations

import gc
import weakref

import numpy as np
from dask.local import get_sync
from dask.task_spec import Task, TaskRef
from dask.utils import key_split

from hcsgraph.config import GlobalPipelineConfig
from hcsgraph.demo import cell_count_pipeline
from hcsgraph.pipeline.fusion import fuse_linear_chains, fused_name, links

from .conftest import output_digest

CELL_COUNT_RUN = "load→count_cells"
CELL_COUNT_STEPS = ["load", "gaussian_filter", "threshold_otsu", "binary_opening", "label", "count_cells"]


def _inc(x):
    return x + 1


def _add(x, y):
    return x + y


def test_cell_count_fuses_into_one_task_per_group_with_identical_output(plate, client, tmp_path):
    fused = cell_count_pipeline().compile(plate.path, tmp_path / "fused")
    unfused = cell_count_pipeline().compile(plate.path, tmp_path / "unfused", GlobalPipelineConfig(fuse_tasks=False))
    counts = fused.task_counts()
    groups = 2 * 2  # wells x channels; sites are stacked
    assert counts[CELL_COUNT_RUN] == groups
    for step in CELL_COUNT_STEPS:
        assert step not in counts and unfused.task_counts()[step] == groups
    # the short name on the dashboard; every step it runs is still in the task
    runs = [task for key, task in fused.tasks.items() if key_split(key) == CELL_COUNT_RUN]
    assert all(links(task) == CELL_COUNT_STEPS for task in runs)
    assert all(len(links(task)) == 1 for task in unfused.tasks.values())
    assert len(fused) == len(unfused) - 5 * groups
    result = client.compute(fused).result()
    reference = unfused.compute(scheduler="sync")
    assert result.ok and reference.ok
    assert output_digest(tmp_path / "fused") == output_digest(tmp_path / "unfused")
    assert result.special_outputs["cell_counts"].equals(reference.special_outputs["cell_counts"])
    # per-step timings still come back for every step of the fused run
    assert set(result.timings["step"]) == {"load", "gaussian_filter", "threshold_otsu", "binary_opening", "label",
                                           "count_cells", "write"}


def test_runs_stop_at_branches_joins_resources_and_kept_keys():
    tasks = {
        "a-1": Task("a-1", _inc, 1),
        "b-1": Task("b-1", _inc, TaskRef("a-1")),
        "gpu-1": Task("gpu-1", _inc, TaskRef("b-1")),  # asks for a GPU: not fused with its CPU neighbours
        "c-1": Task("c-1", _inc, TaskRef("gpu-1")),
        "d-1": Task("d-1", _inc, TaskRef("c-1")),
        "e-1": Task("e-1", _inc, TaskRef("d-1")),  # d has two consumers: the run ends at d
        "f-1": Task("f-1", _add, TaskRef("d-1"), TaskRef("e-1")),
        "result-1": Task("result-1", _inc, TaskRef("f-1")),
    }
    fused, resources = fuse_linear_chains(tasks, {"gpu-1": {"GPU": 1.0}}, keep={"result-1"})
    assert set(fused) == {"a→b-1", "gpu-1", "c→d-1", "e-1", "f-1", "result-1"}
    assert resources == {"gpu-1": {"GPU": 1.0}}
    assert fused["f-1"].dependencies == {"c→d-1", "e-1"}
    expected = get_sync(tasks, "result-1")
    assert expected == 14
    assert get_sync(fused, "result-1") == expected


def test_a_fused_run_drops_each_intermediate_once_the_next_link_has_it():
    seen: list[weakref.ref] = []

    def first():
        array = np.ones(1000)
        seen.append(weakref.ref(array))
        return array

    def second(array):
        return array * 2

    def third(array):
        gc.collect()
        return float(array.sum()), seen[0]() is None

    tasks = {
        "first-1": Task("first-1", first),
        "second-1": Task("second-1", second, TaskRef("first-1")),
        "third-1": Task("third-1", third, TaskRef("second-1")),
    }
    fused, _ = fuse_linear_chains(tasks, {})
    assert list(fused) == ["first→third-1"]
    assert links(fused["first→third-1"]) == ["first", "second", "third"]
    total, first_output_freed = get_sync(fused, "first→third-1")
    assert total == 2000.0
    assert first_output_freed


def test_fused_names_are_short_whatever_the_run_length():
    keys = [(f"step_number_{i}-0123456789abcdef0123456789abcdef", "A01") for i in range(12)]
    assert fused_name(keys) == "step_number_0→step_number_11"
    assert fused_name(keys[:1]) == "step_number_0"
    assert key_split(("load→gaussian_filter-0123456789abcdef0123456789abcdef", "A01")) == "load→gaussian_filter"


def test_two_runs_with_the_same_short_name_fall_back_to_every_link():
    tasks = {
        ("a-1", "A01"): Task(("a-1", "A01"), _inc, 1),
        ("x-1", "A01"): Task(("x-1", "A01"), _inc, TaskRef(("a-1", "A01"))),
        ("z-1", "A01"): Task(("z-1", "A01"), _inc, TaskRef(("x-1", "A01"))),
        ("a→z-1", "A01"): Task(("a→z-1", "A01"), _inc, 5),  # already holds the short key
        ("sum-1", "A01"): Task(("sum-1", "A01"), _add, TaskRef(("z-1", "A01")), TaskRef(("a→z-1", "A01"))),
    }
    fused, _ = fuse_linear_chains(tasks, {}, keep={("sum-1", "A01")})
    assert ("a+x+z-1", "A01") in fused and ("a→z-1", "A01") in fused
    assert get_sync(fused, ("sum-1", "A01")) == get_sync(tasks, ("sum-1", "A01")) == 10
