"""GPU-typed steps in pipelines: resources, submit-time checks and out-of-memory recovery.

The machine running these tests may have no GPU: workers advertise a ``GPU`` resource so the
scheduler's placement can be checked, torch computes on the CPU, and out-of-memory is raised
with torch's own exception class.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import SchedulerPlugin

from hcsgraph import FunctionStep, Pipeline
from hcsgraph.memory import cupy as cupy_function
from hcsgraph.memory import torch as torch_function
from hcsgraph.pipeline import PipelineCompileError

torch = pytest.importorskip("torch")
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _fail_first_calls(counter: Path, k: int) -> bool:
    """True for the first k calls across processes (a file counts the calls)."""
    with open(counter, "a+") as fh:
        fh.seek(0)
        calls = len(fh.read())
        fh.write("x")
    return calls < k


def make_flaky_double(counter: Path, k: int):
    @torch_function(oom_recovery=True)
    def flaky_double(stack):
        if _fail_first_calls(counter, k):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return stack.to(torch.float32) * 2

    flaky_double.output_dtype = "float32"
    return flaky_double


class RecordRestrictions(SchedulerPlugin):
    """Remembers the resource restrictions of every task the scheduler runs."""

    name = "record-restrictions"

    def __init__(self):
        self.seen = {}

    async def start(self, scheduler):
        self.scheduler = scheduler

    def transition(self, key, start, finish, *args, **kwargs):
        ts = self.scheduler.tasks.get(key)
        if ts is not None and ts.resource_restrictions:
            self.seen[str(key)] = dict(ts.resource_restrictions)


@pytest.fixture(scope="module")
def gpu_labelled_cluster():
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      resources={"GPU": 1}) as cluster:
        yield cluster


def test_gpu_steps_carry_the_gpu_resource(plate, gpu_labelled_cluster, tmp_path):
    pipeline = Pipeline(
        [FunctionStep("gaussian_filter", memory_type="torch", sigma=1), FunctionStep("threshold_otsu")],
        name="gpu-resources",
    )
    with Client(gpu_labelled_cluster) as client:
        client.register_plugin(RecordRestrictions())
        graph = pipeline.compile(plate.path, tmp_path / "o")
        gpu_keys = {k for k in graph.resources}
        assert gpu_keys and all(k[0].startswith("gaussian_filter") for k in gpu_keys)
        result = client.compute(graph).result()
        assert result.ok
        seen = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.plugins[RecordRestrictions.name].seen)
    assert set(seen) == {str(k) for k in gpu_keys}
    assert all(v == {"GPU": 1.0} for v in seen.values())


def test_gpu_pipeline_on_a_cluster_without_gpus_fails_at_compile(plate, client, tmp_path):
    @cupy_function
    def needs_cuda(stack):
        return stack

    with pytest.raises(PipelineCompileError, match="needs_cuda is a cupy function, (the cluster has no GPU workers|no CUDA device)"):
        Pipeline([FunctionStep(needs_cuda)], name="p").compile(plate.path, tmp_path / "o")


def test_oom_is_recovered_and_counted(plate, client, tmp_path):
    counter = tmp_path / "calls"
    pipeline = Pipeline([FunctionStep(make_flaky_double(counter, 1), name="double")], name="oom")
    result = client.compute(pipeline.compile(plate.path, tmp_path / "o")).result()
    assert result.ok
    assert result.recoveries == {"torch:retry": 1}
    clean = Pipeline([FunctionStep(make_flaky_double(tmp_path / "none", 0), name="double")], name="oom")
    reference = clean.compile(plate.path, tmp_path / "ref").compute(scheduler="sync")
    a = zarr.open_group(result.image_store, mode="r")["A/1/0/0"][:]
    b = zarr.open_group(reference.image_store, mode="r")["A/1/0/0"][:]
    assert a.dtype == np.float32 and np.array_equal(a, b)


def _cuda_device_count() -> int:
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount()) if cupy.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - cupy missing or no driver
        return 0


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_device_count() == 0, reason="needs cupy and a CUDA device")
def test_cupy_then_torch_pipeline_on_a_gpu_local_cluster(plate, tmp_path):
    from hcsgraph.gpu import local_cluster

    @cupy_function
    def square_on_gpu(stack):
        return stack.astype("float32") ** 2

    square_on_gpu.output_dtype = "float32"

    @torch_function
    def halve_on_gpu(stack):
        assert stack.is_cuda
        return stack / 2

    pipeline = Pipeline([FunctionStep(square_on_gpu), FunctionStep(halve_on_gpu)], name="gpu")
    with local_cluster(n_workers=1) as cluster, Client(cluster):
        graph = pipeline.compile(plate.path, tmp_path / "o")
        counts = graph.task_counts()
        assert counts["to_cupy"] == 4 and counts["to_torch"] == 4 and counts["to_numpy"] == 4
        result = graph.compute()
    assert result.ok
    source = zarr.open_group(result.image_store, mode="r")["A/1/0/0"][0, 0, 0]
    from hcsgraph.plate import open_plate
    from hcsgraph.plate.reader import read_plane

    first = open_plate(plate.path).table.query("well == 'A01' and site == 1 and channel == 1")["path"].iloc[0]
    expected = read_plane(first).astype(np.float32) ** 2 / 2
    assert np.array_equal(source, expected)
