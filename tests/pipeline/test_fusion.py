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
from hcsgraph.pipeline.fusion import fuse_linear_chains, fused_name

from .conftest import output_digest

CELL_COUNT_RUN = "load+gaussian_filter+threshold_otsu+binary_opening+label+count_cells"


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
    for step in ("load", "gaussian_filter", "threshold_otsu", "binary_opening", "label", "count_cells"):
        assert step not in counts and unfused.task_counts()[step] == groups
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
    assert set(fused) == {"a+b-1", "gpu-1", "c+d-1", "e-1", "f-1", "result-1"}
    assert resources == {"gpu-1": {"GPU": 1.0}}
    assert fused["f-1"].dependencies == {"c+d-1", "e-1"}
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
    assert list(fused) == ["first+second+third-1"]
    total, first_output_freed = get_sync(fused, "first+second+third-1")
    assert total == 2000.0
    assert first_output_freed


def test_long_runs_get_a_short_name():
    keys = [(f"step_number_{i}-0123456789abcdef0123456789abcdef", "A01") for i in range(12)]
    assert fused_name(keys) == "step_number_0+10_steps+step_number_11"
    assert key_split(("load+gaussian_filter-0123456789abcdef0123456789abcdef", "A01")) == "load+gaussian_filter"
