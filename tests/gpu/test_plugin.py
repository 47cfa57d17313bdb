"""GPUWorkerPlugin on CPU workers: harmless, says so in the worker log, cleans up on teardown."""

from __future__ import annotations

import sys

import cloudpickle
import pytest

from hcsgraph.config import MemoryType
from hcsgraph.gpu import DeviceInfo, GPUWorkerPlugin, current_device, current_device_info
from hcsgraph.gpu.devices import WORKER_ATTRIBUTE, nvidia_driver_present, select_device
from hcsgraph.gpu.plugin import EVENT_TOPIC
from hcsgraph.gpu.streams import get_stream, synchronize_stream, task_stream

# Workers cannot import test modules: send this module's functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.skipif(
    nvidia_driver_present(), reason="checks the behaviour of machines without a GPU"
)


def _device_info(dask_worker):
    return getattr(dask_worker, "_hcsgraph_gpu", None)


def _has_info(dask_worker):
    return hasattr(dask_worker, "_hcsgraph_gpu")


@pytest.fixture()
def plugged(client):
    """The shared cluster with the plugin registered; unregistered afterwards."""
    client.register_plugin(GPUWorkerPlugin(device_id=0, pool_fraction=0.5), name=GPUWorkerPlugin.name)
    try:
        yield client
    finally:
        if client.run(_has_info) and any(client.run(_has_info).values()):
            client.unregister_worker_plugin(GPUWorkerPlugin.name)


def test_setup_on_cpu_workers_records_no_device(plugged):
    infos = plugged.run(_device_info)
    assert len(infos) == 2
    for info in infos.values():
        assert isinstance(info, DeviceInfo)
        assert info.device_id is None and not info.has_gpu
        assert info.reason == "no NVIDIA driver found"
        assert info.pools == ()


def test_setup_says_so_in_the_worker_log(plugged):
    logs = plugged.get_worker_logs()
    assert len(logs) == 2
    for address, lines in logs.items():
        no_gpu = [msg for _level, msg in lines if "hcsgraph.gpu" in msg and "has no GPU" in msg]
        assert no_gpu, f"no 'has no GPU' line in the log of {address}"
        assert address in no_gpu[-1] and "no NVIDIA driver found" in no_gpu[-1]


def test_tasks_see_no_device(plugged):
    assert plugged.submit(current_device, pure=False).result() is None
    info = plugged.submit(current_device_info, pure=False).result()
    assert isinstance(info, DeviceInfo) and info.device_id is None


def test_streams_are_no_ops_without_cuda(plugged):
    def run_in_stream():
        import torch

        with task_stream(MemoryType.TORCH) as stream:
            value = (torch.arange(4) * 2).tolist()
        return stream, get_stream("torch"), synchronize_stream("torch"), value

    assert plugged.submit(run_in_stream, pure=False).result() == (None, None, False, [0, 2, 4, 6])


def test_teardown_runs_cleanup_and_forgets_the_device(plugged):
    assert all(plugged.run(_has_info).values())
    plugged.unregister_worker_plugin(GPUWorkerPlugin.name)
    assert not any(plugged.run(_has_info).values())
    teardowns = [event for _time, event in plugged.get_events(EVENT_TOPIC) if event["action"] == "teardown"]
    workers = set(plugged.scheduler_info(n_workers=-1)["workers"])
    assert {e["worker"] for e in teardowns} >= workers
    assert all(e["cleaned"] is True and e["device_id"] is None for e in teardowns)


def test_worker_attribute_name_is_documented():
    assert WORKER_ATTRIBUTE == "_hcsgraph_gpu"


def test_current_device_outside_a_worker_is_none():
    assert current_device() is None and current_device_info() is None


def test_select_device_without_a_driver():
    info = select_device()
    assert info == DeviceInfo(None, None, info.visible_devices, "no NVIDIA driver found")


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"device_id": -1}, "device_id"), ({"pool_fraction": 1.5}, "pool_fraction")]
)
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GPUWorkerPlugin(**kwargs)
