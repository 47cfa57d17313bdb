"""local_cluster's worker layout, the GPU resource, and the submit-time check for GPU workers."""

from __future__ import annotations

import logging
import os
import pickle
import sys

import cloudpickle
import pytest
from distributed import Client, LocalCluster

from hcsgraph.gpu import (
    GPU_RESOURCE,
    NoGPUWorkersError,
    cluster_gpu_count,
    local_cluster,
    require_gpu_workers,
    visible_gpus,
)
from hcsgraph.gpu.devices import cycled_visible_devices, nvidia_driver_present, parse_visible_devices

# Workers cannot import test modules: send this module's functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

no_driver = pytest.mark.skipif(
    nvidia_driver_present(), reason="checks the behaviour of machines without a GPU"
)


def _cuda_visible_devices():
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def _worker_view(dask_worker):
    info = getattr(dask_worker, "_hcsgraph_gpu", None)
    return os.environ.get("CUDA_VISIBLE_DEVICES"), dict(dask_worker.state.total_resources), info


def test_cycled_visible_devices_puts_each_workers_gpu_first():
    devices = ["0", "1", "2"]
    assert [cycled_visible_devices(i, devices) for i in range(3)] == ["0,1,2", "1,2,0", "2,0,1"]
    uuids = ["GPU-aa", "GPU-bb"]
    assert cycled_visible_devices(1, uuids) == "GPU-bb,GPU-aa"


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("", []), ("-1", []), ("0", ["0"]), (" 2, 3 ", ["2", "3"])]
)
def test_parse_visible_devices(value, expected):
    assert parse_visible_devices(value) == expected


@no_driver
def test_cpu_machine_gets_a_cpu_cluster_and_says_so(caplog):
    with caplog.at_level(logging.INFO, logger="hcsgraph.gpu"):
        cluster = local_cluster(n_workers=1, dashboard_address=":0")
    try:
        assert visible_gpus() == []
        assert "no GPU visible: starting a CPU LocalCluster" in caplog.text
        assert type(cluster) is LocalCluster
        with Client(cluster) as client:
            assert cluster_gpu_count(client) == 0
            ((env, resources, info),) = client.run(_worker_view).values()
            assert GPU_RESOURCE not in resources
            assert info is not None and info.device_id is None  # the plugin is registered
            with pytest.raises(NoGPUWorkersError) as err:
                require_gpu_workers(client, ["denoise_cupy", "segment_torch"])
            message = str(err.value)
            assert "'denoise_cupy', 'segment_torch'" in message and "GPU" in message and "1 worker" in message
            require_gpu_workers(client, [])  # no GPU step, nothing to check
    finally:
        cluster.close()


def test_one_worker_per_gpu_with_rotated_cuda_visible_devices():
    """The GPU layout, started from an explicit device list (the workers here have no CUDA)."""
    cluster = local_cluster(cuda_visible_devices="0,1", dashboard_address=":0", memory_limit="2GiB")
    try:
        assert len(cluster.workers) == 2
        with Client(cluster) as client:
            views = sorted(client.run(_worker_view).values(), key=lambda v: v[0])
            assert [v[0] for v in views] == ["0,1", "1,0"]
            assert [v[1] for v in views] == [{GPU_RESOURCE: 1}, {GPU_RESOURCE: 1}]
            assert all(v[2] is not None for v in views)  # the plugin ran on each worker
            assert cluster_gpu_count(client) == 2
            require_gpu_workers(client, ["denoise_cupy"])
            # a task asking for the GPU resource runs instead of waiting in no-worker
            future = client.submit(_cuda_visible_devices, resources={GPU_RESOURCE: 1}, pure=False)
            assert future.result(timeout=30) in ("0,1", "1,0")
            with pytest.raises(NoGPUWorkersError, match="'big_model'"):
                require_gpu_workers(client, ["big_model"], amount=2)
            with pytest.raises(ValueError, match="one per GPU"):
                cluster.scale(3)
    finally:
        cluster.close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"n_workers": 3}, "only 2 GPU"), ({"processes": False}, "processes=True")],
)
def test_gpu_layout_rejects_impossible_requests(kwargs, match):
    with pytest.raises(ValueError, match=match):
        local_cluster(cuda_visible_devices=["0", "1"], dashboard_address=":0", **kwargs)


def test_shared_cluster_has_no_gpu_workers(client):
    assert cluster_gpu_count(client) == 0
    with pytest.raises(NoGPUWorkersError, match="'gaussian_cupy'"):
        require_gpu_workers(client, ["gaussian_cupy"])


def test_no_gpu_workers_error_survives_pickling():
    err = pickle.loads(pickle.dumps(NoGPUWorkersError(["a", "b"], 3)))
    assert err.step_names == ["a", "b"] and "'a', 'b'" in str(err) and "3 worker(s)" in str(err)
