"""The client/worker check: same hcsgraph, Python and dask release, and the pipeline's array libraries."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys

import cloudpickle
import pytest

from hcsgraph import FunctionStep, Pipeline
from hcsgraph.config import MemoryType
from hcsgraph.deploy.versions import (
    ClusterMismatchError,
    _portable,
    _probe,
    check_cluster,
    compare_reports,
    local_report,
    pipeline_memory_types,
    required_modules,
)
from hcsgraph.memory.decorators import torch as torch_type

from .conftest import PIPELINE_FILE


def _worker(report: dict, **changes) -> dict:
    versions = {**report["versions"], **changes.pop("versions", {})}
    return {**report, "versions": versions, **changes}


def test_a_matching_cluster_passes_and_reports_every_worker(client) -> None:
    reports = check_cluster(client, {MemoryType.NUMPY})
    assert len(reports) == len(client.scheduler_info(n_workers=-1)["workers"]) == 2
    for report in reports.values():
        assert report["versions"]["hcsgraph"] == local_report()["versions"]["hcsgraph"]


SITECUSTOMIZE = """
import importlib.metadata, sys
_version = importlib.metadata.version
importlib.metadata.version = lambda name: "0.0.1" if name == "hcsgraph" else _version(name)
sys.modules["tensorflow"] = None  # as if not installed
"""


@pytest.fixture()
def odd_worker(tmp_path):
    """A scheduler with one worker, ``old-worker``, that reports hcsgraph 0.0.1 and has no tensorflow."""
    from distributed import LocalCluster

    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    with LocalCluster(n_workers=0, dashboard_address=":0", host="127.0.0.1") as cluster:
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address, "--name", "old-worker",
             "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield cluster
        finally:
            worker.terminate()
            worker.wait(timeout=60)


def test_a_mismatched_worker_is_one_error_naming_it_and_the_package_before_any_task(odd_worker, tmp_path) -> None:
    from distributed import Client

    with Client(odd_worker, timeout=60) as client:
        client.wait_for_workers(1, timeout=120)
        with pytest.raises(ClusterMismatchError) as caught:
            check_cluster(client, [MemoryType.NUMPY, MemoryType.TENSORFLOW])
        assert client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) == 0
    text = str(caught.value)
    assert re.match(r"worker old-worker \(tcp://127\.0\.0\.1:\d+\) cannot run this pipeline: hcsgraph 0\.0\.1 "
                    r"there, \S+ on the client", text), text
    assert "tensorflow is not installed there" in text and "pip install hcsgraph[tf]" in text

    # the command line says the same in its one Error line, and runs nothing
    from hcsgraph.plate.synthetic import make_plate

    plate = make_plate(tmp_path / "plate", n_wells=1, sites=1, channels=1, size=(32, 32), seed=1)
    done = subprocess.run([sys.executable, "-m", "hcsgraph.cli", "run", str(PIPELINE_FILE), str(plate.path), "-o",
                           str(tmp_path / "out"), "--scheduler", odd_worker.scheduler_address],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 2
    assert "Error: worker old-worker (tcp://127.0.0.1:" in done.stderr and "hcsgraph 0.0.1 there" in done.stderr, \
        done.stderr
    assert not (tmp_path / "out" / "cell_counts.csv").exists()


def test_versions_that_differ_are_named_hcsgraph_first() -> None:
    mine = local_report(["numpy"])
    other = _worker(mine, python="2.7.18", versions={"hcsgraph": "0.0.1", "dask": "1999.1.0"})
    mismatches = compare_reports(mine, {"w": other}, required_modules([]))
    assert [m.package for m in mismatches] == ["hcsgraph", "dask", "Python"]
    error = ClusterMismatchError(mismatches)
    assert f"worker w cannot run this pipeline: hcsgraph 0.0.1 there, {mine['versions']['hcsgraph']} on the client" \
        in str(error)
    assert pickle.loads(pickle.dumps(error)).mismatches == mismatches


def test_patch_releases_of_dask_may_differ_but_not_of_hcsgraph() -> None:
    mine = local_report()
    year, month = mine["versions"]["dask"].split(".")[:2]
    assert compare_reports(mine, {"w": _worker(mine, versions={"dask": f"{year}.{month}.99"})}, {}) == []
    assert compare_reports(mine, {"w": _worker(mine, versions={"hcsgraph": "9.9.9"})}, {})[0].package == "hcsgraph"


def test_gpu_libraries_are_needed_only_on_gpu_workers_when_there_are_some() -> None:
    mine = local_report(["numpy", "torch", "cupy"])
    cpu = _worker(mine, modules={"numpy": True, "torch": False, "cupy": False})
    gpu = _worker(mine, modules={"numpy": True, "torch": True, "cupy": True})
    needs = required_modules([MemoryType.TORCH, MemoryType.CUPY])
    assert compare_reports(mine, {"cpu": cpu, "gpu": gpu}, needs, gpu_workers={"gpu"}) == []
    missing = compare_reports(mine, {"cpu": cpu}, needs)  # no GPU worker: torch runs anywhere, cupy falls back
    assert [m.package for m in missing] == ["torch"]


def test_pipeline_memory_types_reads_steps_and_decorators() -> None:
    @torch_type
    def double(stack):
        return stack * 2

    pipeline = Pipeline([FunctionStep("gaussian_filter", sigma=1), FunctionStep(double),
                         FunctionStep("gaussian_filter", memory_type="pyclesperanto", sigma=1)])
    assert pipeline_memory_types(pipeline) == {MemoryType.NUMPY, MemoryType.TORCH, MemoryType.PYCLESPERANTO}


def test_the_probe_runs_where_hcsgraph_cannot_be_imported() -> None:
    """It is pickled by value: a worker without hcsgraph still answers (and is then named for it)."""
    payload = cloudpickle.dumps(_portable(_probe))
    assert b"hcsgraph.deploy" not in payload
    script = ("import sys, pickle; sys.modules['hcsgraph'] = None; probe = pickle.loads(sys.stdin.buffer.read()); "
              "print(probe(('numpy',), ('hcsgraph',))['modules'])")
    done = subprocess.run([sys.executable, "-c", script], input=payload, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "{'numpy': True}"
