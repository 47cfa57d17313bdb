"""Compiling a pipeline: the graph's keys, groups and conversions, and every compile-time error."""

from __future__ import annotations

import os

import dask
import numpy as np
import pandas as pd
import pytest
from dask.task_spec import Task
from dask.utils import key_split

from hcsgraph import FunctionStep, Pipeline
from hcsgraph.config import GlobalPipelineConfig, VFSConfig
from hcsgraph.memory import cupy as cupy_function
from hcsgraph.pipeline import OutputExistsError, PipelineCompileError, special_inputs, special_outputs
from hcsgraph.plate import PlateIndex


def _prefixes(graph):
    return graph.task_counts()


UNFUSED = GlobalPipelineConfig(fuse_tasks=False)


def test_keys_carry_step_name_and_group(plate, tmp_path):
    graph = Pipeline([FunctionStep("gaussian_filter", sigma=1)], name="smooth").compile(
        plate.path, tmp_path / "o", UNFUSED)
    keys = [k for k in graph.tasks if key_split(k) == "gaussian_filter"]
    # default variable_components=("site",): one task per well × channel (× z × t)
    assert len(keys) == 2 * 2
    assert sorted((k[1], k[2]) for k in keys) == [("A01", 1), ("A01", 2), ("A02", 1), ("A02", 2)]
    assert all(isinstance(graph.tasks[k], Task) for k in graph.tasks)
    assert dask.is_dask_collection(graph)


def test_one_task_per_group_follows_variable_components(plate, tmp_path):
    by_channel = Pipeline([FunctionStep("gaussian_filter", variable_components=("channel",))], name="p")
    graph = by_channel.compile(plate.path, tmp_path / "o", UNFUSED)
    # groups differ only in channel: one per well × site
    keys = [k for k in graph.tasks if key_split(k) == "gaussian_filter"]
    assert sorted((k[1], k[2]) for k in keys) == [("A01", 1), ("A01", 2), ("A02", 1), ("A02", 2)]


def test_conversion_tasks_only_where_memory_types_differ(plate, tmp_path):
    pipeline = Pipeline(
        [
            FunctionStep("gaussian_filter", sigma=1),
            FunctionStep("background_subtract", memory_type="torch", radius=5),
            FunctionStep("median_filter", memory_type="torch", size=3),
            FunctionStep("threshold_otsu"),
        ],
        name="mixed",
    )
    counts = _prefixes(pipeline.compile(plate.path, tmp_path / "o", UNFUSED))
    groups = 4
    assert counts["to_torch"] == groups  # numpy -> torch once, before background_subtract
    assert counts["to_numpy"] == groups  # torch -> numpy once, before threshold_otsu
    numpy_only = _prefixes(Pipeline([FunctionStep("gaussian_filter"), FunctionStep("threshold_otsu")],
                                    name="np").compile(plate.path, tmp_path / "o2", UNFUSED))
    assert "to_torch" not in numpy_only and "to_numpy" not in numpy_only


def test_unknown_function_name(plate, tmp_path):
    with pytest.raises(PipelineCompileError, match="gausian_filter") as info:
        Pipeline([FunctionStep("gausian_filter")], name="p").compile(plate.path, tmp_path / "o")
    assert "gaussian_filter" in str(info.value)  # suggests the close name


def test_special_input_nothing_produces(plate, tmp_path):
    @special_inputs("threshold")
    def apply(stack, threshold):
        return stack > threshold

    with pytest.raises(PipelineCompileError, match="'threshold'.*no earlier step"):
        Pipeline([FunctionStep(apply)], name="p").compile(plate.path, tmp_path / "o")


def test_special_input_from_a_later_step_is_an_error(plate, tmp_path):
    @special_outputs("level")
    def measure(stack):
        return stack, float(stack.mean())

    @special_inputs("level")
    def apply(stack, level):
        return stack > level

    with pytest.raises(PipelineCompileError, match="no earlier step"):
        Pipeline([FunctionStep(apply), FunctionStep(measure)], name="p").compile(plate.path, tmp_path / "o")


def _has_cuda() -> bool:
    try:
        import cupy
        return bool(cupy.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.skipif(_has_cuda(), reason="this machine has a CUDA device")
def test_cupy_step_without_gpu_and_without_cpu_version(plate, tmp_path):
    @cupy_function
    def gpu_only(stack):
        return stack

    with pytest.raises(PipelineCompileError, match="cupy.*no CPU version"):
        Pipeline([FunctionStep(gpu_only)], name="p").compile(plate.path, tmp_path / "o")


@pytest.mark.skipif(_has_cuda(), reason="this machine has a CUDA device")
def test_cupy_library_step_without_gpu_runs_its_numpy_version(plate, tmp_path):
    with pytest.warns(UserWarning, match="numpy version"):
        graph = Pipeline([FunctionStep("gaussian_filter", memory_type="cupy")], name="p").compile(
            plate.path, tmp_path / "o")
    assert "to_cupy" not in graph.task_counts()


def test_existing_output_needs_overwrite(plate, tmp_path):
    pipeline = Pipeline([FunctionStep("gaussian_filter")], name="p")
    pipeline.compile(plate.path, tmp_path / "o").compute(scheduler="sync")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        pipeline.compile(plate.path, tmp_path / "o")
    pipeline.compile(plate.path, tmp_path / "o", overwrite=True)  # allowed


def test_plate_without_images(tmp_path):
    empty = PlateIndex(
        pd.DataFrame(columns=["row", "column", "well", "site", "channel", "z", "t", "path"]),
        name="empty", root=str(tmp_path), source_format="pattern",
    )
    with pytest.raises(PipelineCompileError, match="no images"):
        Pipeline([FunctionStep("gaussian_filter")], name="p").compile(empty, tmp_path / "o")


def test_projection_collapses_the_varying_component(plate, tmp_path):
    graph = Pipeline([FunctionStep("max_projection", variable_components=("site",))], name="proj").compile(
        plate.path, tmp_path / "o")
    result = graph.compute(scheduler="sync")
    import zarr

    field = zarr.open_group(result.image_store, mode="r")["A"]["1"]
    assert len([k for k in field.group_keys()]) == 1  # one field: all sites projected into one
    image = field["0"]["0"]
    assert image.shape == (1, 2, 1, 128, 128)


def test_memory_limit_routes_intermediates_through_scratch_zarr(plate, tmp_path):
    pipeline = Pipeline([FunctionStep("gaussian_filter"), FunctionStep("threshold_otsu")], name="p")
    in_memory = pipeline.compile(plate.path, tmp_path / "mem")
    assert in_memory.scratch_backend is None
    tiny = GlobalPipelineConfig(vfs=VFSConfig(memory_limit_gb=1e-6), fuse_tasks=False)
    scratch = pipeline.compile(plate.path, tmp_path / "scratch", tiny)
    assert scratch.scratch_backend == "zarr"
    # gaussian (uint16) + otsu (bool) over 8 planes of 128×128
    assert scratch.planned_intermediate_bytes == 8 * 128 * 128 * (2 + 1)
    r1 = in_memory.compute(scheduler="sync")
    r2 = scratch.compute(scheduler="sync")
    assert not (tmp_path / "scratch" / ".hcsgraph" / "scratch").exists()  # cleaned up after the run
    import zarr

    a = zarr.open_group(r1.image_store, mode="r")["A/1/0/0"][:]
    b = zarr.open_group(r2.image_store, mode="r")["A/1/0/0"][:]
    assert a.dtype == np.bool_ and np.array_equal(a, b)


def test_scratch_store_in_a_folder_the_user_names(plate, tmp_path):
    pipeline = Pipeline([FunctionStep("gaussian_filter"), FunctionStep("threshold_otsu")], name="p")
    cfg = GlobalPipelineConfig(vfs=VFSConfig(memory_limit_gb=1e-6, scratch_dir=str(tmp_path / "node-local")),
                               fuse_tasks=False)
    graph = pipeline.compile(plate.path, tmp_path / "o", cfg)
    paths = [t.args[1].scratch_path for t in graph.tasks.values()
             if getattr(t.args[1] if len(t.args) > 1 else None, "scratch_path", None)]
    assert paths and all(p.startswith(str(tmp_path / "node-local")) for p in paths)
    seen = []
    import hcsgraph.pipeline.tasks as tasks_module

    original = tasks_module.file_manager

    def recording(path, options=None):
        seen.append(path)
        return original(path, options)

    tasks_module.file_manager = recording
    try:
        result = graph.compute(scheduler="sync")
    finally:
        tasks_module.file_manager = original
    assert result.ok and any(p.startswith(str(tmp_path / "node-local")) for p in seen)
    assert not os.listdir(tmp_path / "node-local")  # removed after the run
    assert not (tmp_path / "o" / ".hcsgraph" / "scratch").exists()


def test_fused_runs_use_scratch_only_for_results_that_leave_the_task(plate, tmp_path):
    from hcsgraph.demo import cell_count_pipeline
    from hcsgraph.pipeline.fusion import TaskChain

    tiny = GlobalPipelineConfig(vfs=VFSConfig(memory_limit_gb=1e-6))
    graph = cell_count_pipeline().compile(plate.path, tmp_path / "o", tiny)
    assert graph.scratch_backend == "zarr"
    runs = [t for t in graph.tasks.values() if t.args and isinstance(t.args[0], TaskChain)]
    assert runs
    for task in runs:
        steps = {key_split(link.key): link.args[1] for link in task.args[0].tasks if key_split(link.key) != "load"}
        # count_cells' stack goes on to the write and its counts to the table: that result is stored
        assert steps.pop("count_cells").scratch_path is not None
        assert all(call.scratch_path is None for call in steps.values())
    result = graph.compute(scheduler="sync")
    reference = cell_count_pipeline().compile(plate.path, tmp_path / "ref").compute(scheduler="sync")
    assert result.special_outputs["cell_counts"].equals(reference.special_outputs["cell_counts"])
    assert not (tmp_path / "o" / ".hcsgraph" / "scratch").exists()
