"""The same graph on every scheduler: identical bytes, and what the dashboard shows."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import dask
import pytest
from distributed import Client

from hcsgraph.config import GlobalPipelineConfig
from hcsgraph.demo import cell_count_pipeline

from .conftest import output_digest


@pytest.fixture(scope="module")
def reference(plate, tmp_path_factory):
    out = tmp_path_factory.mktemp("sync") / "out"
    result = cell_count_pipeline().compile(plate.path, out).compute(scheduler="sync")
    digest = output_digest(out)
    assert any(name.endswith("zarr.json") for name in digest) and "cell_counts.csv" in digest
    return result, digest


def test_threaded_scheduler_gives_identical_bytes(plate, reference, tmp_path):
    cell_count_pipeline().compile(plate.path, tmp_path / "o").compute(scheduler="threads", num_workers=2)
    assert output_digest(tmp_path / "o") == reference[1]


def test_local_cluster_gives_identical_bytes_every_way(plate, reference, client, tmp_path):
    graph = cell_count_pipeline().compile(plate.path, tmp_path / "a")
    future = client.compute(graph)
    result = future.result()
    assert result.ok
    assert output_digest(tmp_path / "a") == reference[1]
    # dask.compute and .persist on the same cluster
    (result_b,) = dask.compute(cell_count_pipeline().compile(plate.path, tmp_path / "b"))
    assert output_digest(tmp_path / "b") == reference[1]
    persisted = cell_count_pipeline().compile(plate.path, tmp_path / "c").persist()
    assert persisted.compute().ok
    assert output_digest(tmp_path / "c") == reference[1]
    assert result_b.special_outputs["cell_counts"].equals(reference[0].special_outputs["cell_counts"])


def test_dashboard_groups_tasks_by_step_under_a_span(plate, client, tmp_path):
    fused = cell_count_pipeline(name="dashboard-fused").compile(plate.path, tmp_path / "fused")
    client.compute(fused).result()
    graph = cell_count_pipeline(name="dashboard-check").compile(plate.path, tmp_path / "o",
                                                                GlobalPipelineConfig(fuse_tasks=False))
    client.compute(graph).result()

    def seen(dask_scheduler):
        prefixes = set(dask_scheduler.task_prefixes)
        spans = sorted({" / ".join(span.name) for span in dask_scheduler.extensions["spans"].spans.values()})
        return sorted(prefixes), spans

    prefixes, spans = client.run_on_scheduler(seen)
    for step in ("load", "gaussian_filter", "threshold_otsu", "binary_opening", "label", "count_cells", "write"):
        assert step in prefixes
    # fused, a group's run shows under the names of all its steps
    assert "load→count_cells" in prefixes  # fused: named after its first and last links
    assert "dashboard-check" in spans and "dashboard-fused" in spans


def test_separate_scheduler_and_worker_processes(plate, reference, tmp_path):
    """`dask scheduler` and `dask worker` started as separate processes on 127.0.0.1."""
    scheduler_file = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard", "--scheduler-file", str(scheduler_file)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(scheduler_file),
             "--nworkers", "2", "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        with Client(scheduler_file=str(scheduler_file), timeout=60) as c:
            c.wait_for_workers(2, timeout=90)
            result = c.compute(cell_count_pipeline().compile(plate.path, tmp_path / "o")).result()
        assert result.ok
        assert output_digest(tmp_path / "o") == reference[1]
    finally:
        for proc in (worker, scheduler):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)


def test_visualize_writes_the_graph(plate, tmp_path):
    import shutil

    if shutil.which("dot") is None:
        pytest.skip("graphviz's `dot` is not installed")
    graph = cell_count_pipeline().compile(plate.path, tmp_path / "o")
    graph.visualize(filename=str(tmp_path / "graph.png"))
    assert (tmp_path / "graph.png").stat().st_size > 1000


def test_no_pixels_reach_the_client(plate, client, tmp_path):
    """The result that comes back holds tables and statuses, not images."""
    import pickle

    graph = cell_count_pipeline().compile(plate.path, tmp_path / "o")
    result = client.compute(graph).result()
    pixels = 8 * 128 * 128 * 2
    assert len(pickle.dumps(result)) < pixels / 4
    # and no task's result the client holds is an array: only the run task is gathered
    assert graph.__dask_keys__() == [graph.result_key]
