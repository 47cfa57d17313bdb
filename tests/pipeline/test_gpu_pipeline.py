"""GPU-typed steps in pipelines: where they run, submit-time checks, streams and out-of-memory recovery.

Placement is checked through the scheduler, as a user would see it: the task stream says which
worker ran each task. Task names follow the dashboard's (``dask.utils.key_split``): with task
fusion on (the default) a fused task is named after its links joined by ``+``
(``to_cupy+square_on_gpu+to_torch-<token>``), so the checks look at the links of each name.

The machine running the CPU tests may have no GPU: a worker advertises the ``GPU`` resource so
that placement can be checked, torch computes on the CPU, and out-of-memory is raised with
torch's own exception class. The ``gpu`` tests need cupy, a CUDA build of torch and a device.
"""

from __future__ import annotations

import copy
import json
import sys
import threading
from collections import Counter
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import zarr
from distributed import Client, LocalCluster, get_task_stream

from hcsgraph import FunctionStep, GlobalPipelineConfig, Pipeline
from hcsgraph.memory import cupy as cupy_function
from hcsgraph.memory import torch as torch_function
from hcsgraph.pipeline import PipelineCompileError

torch = pytest.importorskip("torch")
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def link_names(graph) -> dict[str, list[str]]:
    """str(key) → the step and conversion names the task runs (several for a fused task)."""
    return {str(key): graph.links(key) for key in graph.tasks}


def link_counts(names: dict[str, list[str]], keys) -> Counter:
    """How many of ``keys`` (str) run each link, fused or not."""
    return Counter(link for key in keys for link in names[key])


def add_cpu_only_worker(cluster) -> None:
    """Add a worker process that offers no ``GPU`` resource and sees no GPU to a running cluster."""
    spec = copy.deepcopy(cluster.new_spec)
    options = dict(spec["options"])
    options["resources"] = {}
    options["env"] = {**(options.get("env") or {}), "CUDA_VISIBLE_DEVICES": ""}
    cluster.worker_spec["cpu-only"] = {"cls": spec["cls"], "options": options}
    cluster.sync(cluster._correct_state)


def gpu_workers_of(client: Client) -> set[str]:
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return {addr for addr, info in workers.items() if (info.get("resources") or {}).get("GPU", 0) > 0}


def ran_on(stream) -> dict[str, str]:
    """Task key → worker address, from a task stream."""
    return {str(record["key"]): record["worker"] for record in stream.data}


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


def test_gpu_typed_steps_run_only_on_gpu_workers(plate, tmp_path):
    """One worker offers GPU, one does not: the torch step (and its conversions) run only on the first."""
    pipeline = Pipeline(
        [FunctionStep("gaussian_filter", memory_type="torch", sigma=1), FunctionStep("threshold_otsu")],
        name="gpu-placement",
    )
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                      resources={"GPU": 1}, memory_limit="2GiB") as cluster:
        add_cpu_only_worker(cluster)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=60)
            gpu_workers = gpu_workers_of(client)
            assert len(gpu_workers) == 1
            graph = pipeline.compile(plate.path, tmp_path / "o")  # fusion on, as by default
            with get_task_stream(client) as stream:
                result = client.compute(graph).result(timeout=300)
    assert result.ok
    ran = ran_on(stream)
    names = link_names(graph)
    torch_tasks = {key: worker for key, worker in ran.items()
                   if key in names and {"gaussian_filter", "to_torch"} & set(names[key])}
    assert link_counts(names, torch_tasks)["gaussian_filter"] == 4  # one per group: 2 wells x 2 channels
    assert set(torch_tasks.values()) == gpu_workers
    assert {str(k) for k in graph.gpu_keys} == set(torch_tasks)
    assert link_counts(names, [k for k in ran if k in names])["threshold_otsu"] == 4


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


# ---------------------------------------------------------------------------------------------
# on a GPU


def _cuda_ready() -> str:
    """Why the GPU pipeline cannot run here, or "" when cupy and a CUDA build of torch see a device."""
    try:
        import cupy

        if not cupy.cuda.is_available() or cupy.cuda.runtime.getDeviceCount() == 0:
            return "cupy sees no CUDA device"
    except Exception as exc:  # noqa: BLE001 - cupy missing or no driver
        return f"needs cupy with a CUDA device ({type(exc).__name__})"
    if not torch.cuda.is_available():
        return "needs torch built with CUDA and a device"
    return ""


CUDA_MISSING = _cuda_ready()


def _record(path: str, entry: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry) + "\n")


def make_gpu_steps(log: str):
    """A cupy step and a torch step that record, as they run, which CUDA stream is current."""

    @cupy_function  # out-of-memory recovery on (the default)
    def square_on_gpu(stack):
        import cupy

        from hcsgraph.gpu import get_stream

        own = get_stream("cupy")  # this worker thread's stream (made here if the step is not on it)
        _record(log, {"step": "square", "current": int(cupy.cuda.get_current_stream().ptr),
                      "own": None if own is None else int(own.ptr), "thread": threading.get_ident()})
        x = stack.astype("float32")
        return x * x

    square_on_gpu.output_dtype = "float32"

    @torch_function(oom_recovery=False)  # the plain call, outside the recovery machinery
    def halve_on_gpu(stack):
        from hcsgraph.gpu import get_stream

        assert stack.is_cuda
        own = get_stream("torch")
        _record(log, {"step": "halve", "current": int(torch.cuda.current_stream(stack.device).cuda_stream),
                      "own": None if own is None else int(own.cuda_stream), "thread": threading.get_ident()})
        return stack / 2

    halve_on_gpu.output_dtype = "same"  # not probed on the client
    return square_on_gpu, halve_on_gpu


@pytest.mark.gpu
@pytest.mark.skipif(bool(CUDA_MISSING), reason=CUDA_MISSING or "CUDA is ready")
def test_cupy_then_torch_pipeline_on_a_gpu_local_cluster(plate, tmp_path):
    from hcsgraph.gpu import local_cluster
    from hcsgraph.plate import open_plate
    from hcsgraph.plate.reader import read_plane

    log = tmp_path / "streams.jsonl"
    square_on_gpu, halve_on_gpu = make_gpu_steps(str(log))
    pipeline = Pipeline([FunctionStep(square_on_gpu), FunctionStep(halve_on_gpu)], name="gpu")
    with local_cluster(n_workers=1, dashboard_address=":0") as cluster:
        add_cpu_only_worker(cluster)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            gpu_workers = gpu_workers_of(client)
            assert len(gpu_workers) == 1
            # one conversion task per group and edge, where fusion is off ...
            unfused = pipeline.compile(plate.path, tmp_path / "unfused", GlobalPipelineConfig(fuse_tasks=False))
            counts = unfused.task_counts()
            assert (counts["to_cupy"], counts["to_torch"], counts["to_numpy"]) == (4, 4, 4)
            # ... and the same links inside the fused tasks, where it is on (the default)
            graph = pipeline.compile(plate.path, tmp_path / "o")
            names = link_names(graph)
            fused = link_counts(names, names)
            assert (fused["to_cupy"], fused["to_torch"], fused["to_numpy"]) == (4, 4, 4)
            assert fused["square_on_gpu"] == fused["halve_on_gpu"] == 4
            with get_task_stream(client) as stream:
                result = client.compute(graph).result(timeout=300)
    assert result.ok

    # everything that holds device data ran on the GPU worker
    device_links = {"to_cupy", "square_on_gpu", "to_torch", "halve_on_gpu", "to_numpy"}
    placed = {key: worker for key, worker in ran_on(stream).items()
              if key in names and device_links & set(names[key])}
    assert link_counts(names, placed)["halve_on_gpu"] == 4 and set(placed.values()) == gpu_workers

    # each step ran on its worker thread's own stream, not on a default stream
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert Counter(r["step"] for r in records) == {"square": 4, "halve": 4}
    for r in records:
        assert r["current"] == r["own"], r
        assert r["current"] not in (0, 1, 2), r  # the legacy and per-thread default streams

    # the values: (x * x) / 2 in float32
    image = zarr.open_group(result.image_store, mode="r")["A/1/0/0"][0, 0, 0]
    first = open_plate(plate.path).table.query("well == 'A01' and site == 1 and channel == 1")["path"].iloc[0]
    x = read_plane(first).astype(np.float32)
    np.testing.assert_array_equal(image, x * x / 2)
