"""Clusters with GPU workers, and the check that a GPU pipeline has somewhere to run.

:func:`local_cluster` follows dask-cuda's layout: one worker process per visible GPU, each
started with ``CUDA_VISIBLE_DEVICES`` rotated so that its GPU comes first, each advertising the
worker resource ``GPU`` (tasks of GPU steps ask for it), with :class:`GPUWorkerPlugin`
registered. Without GPUs it starts an ordinary CPU ``LocalCluster`` and says so.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from typing import Any

from distributed import Client, LocalCluster
from distributed.worker_memory import parse_memory_limit

from hcsgraph.gpu.devices import cycled_visible_devices, parse_visible_devices, visible_gpus
from hcsgraph.gpu.plugin import GPUWorkerPlugin
from hcsgraph.workers.allocator import HostAllocatorPlugin

logger = logging.getLogger("hcsgraph.gpu")

GPU_RESOURCE = "GPU"
"""Name of the worker resource a GPU worker advertises and GPU tasks ask for."""


class NoGPUWorkersError(RuntimeError):
    """A pipeline needs GPU workers and the cluster has none."""

    def __init__(self, step_names: Iterable[str], n_workers: int, needed: float = 1.0) -> None:
        self.step_names = list(step_names)
        self.n_workers = n_workers
        self.needed = needed
        steps = ", ".join(repr(s) for s in self.step_names)
        super().__init__(
            f"step(s) {steps} need a GPU worker (worker resource {GPU_RESOURCE}={needed:g}), but none of the "
            f"cluster's {n_workers} worker(s) offers one, so their tasks would wait forever. Start the cluster "
            f"with hcsgraph.gpu.local_cluster() on a machine with GPUs, start GPU workers with "
            f"`dask worker ... --resources {GPU_RESOURCE}=1` (one per GPU), or give the steps a CPU version."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.step_names, self.n_workers, self.needed))


class GPULocalCluster(LocalCluster):
    """A ``LocalCluster`` with one worker process per GPU (see :func:`local_cluster`)."""

    def __init__(self, devices: list[str], n_workers: int, **kwargs: Any) -> None:
        self.gpu_devices = list(devices)
        super().__init__(n_workers=0, processes=True, **kwargs)
        self.scale(n_workers)
        self.sync(self._correct_state)

    def new_worker_spec(self) -> dict[Any, Any]:
        """The next worker: the lowest free GPU index, with its rotated ``CUDA_VISIBLE_DEVICES``."""
        free = [i for i in range(len(self.gpu_devices)) if i not in self.worker_spec]
        if not free:
            raise ValueError(
                f"cannot start more than {len(self.gpu_devices)} GPU worker(s): one per GPU "
                f"({','.join(self.gpu_devices)})"
            )
        index = free[0]
        spec = copy.deepcopy(self.new_spec)
        env = dict(spec["options"].get("env") or {})
        env["CUDA_VISIBLE_DEVICES"] = cycled_visible_devices(index, self.gpu_devices)
        spec["options"]["env"] = env
        return {index: spec}


def local_cluster(
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    *,
    cuda_visible_devices: str | list[str] | None = None,
    plugin: GPUWorkerPlugin | None = None,
    allocator: HostAllocatorPlugin | None | bool = True,
    plate_page: bool = True,
    **kwargs: Any,
) -> LocalCluster:
    """Start a local cluster: one worker per visible GPU, or a CPU cluster when there is none.

    ``n_workers``: defaults to the number of GPUs (at most that many); on a machine without
    GPUs it is passed to ``LocalCluster`` as is. ``cuda_visible_devices``: the GPUs to use
    (default: ``CUDA_VISIBLE_DEVICES``, else every GPU the driver reports). GPU workers
    advertise ``resources={"GPU": 1}`` (a ``resources`` keyword overrides it). ``plugin``: the
    :class:`GPUWorkerPlugin` registered on every worker (default ``GPUWorkerPlugin()``).
    ``allocator``: the :class:`~hcsgraph.workers.HostAllocatorPlugin` registered on every worker
    (True: the default one; False or None: leave malloc as distributed sets it); it is not
    registered with ``processes=False``, where workers share the caller's process. ``plate_page``:
    serve the plate page (:mod:`hcsgraph.dashboard`) at ``/hcsgraph-plate`` on the dashboard.
    Other keywords go to ``LocalCluster``.
    """
    if isinstance(cuda_visible_devices, str):
        devices = parse_visible_devices(cuda_visible_devices) or []
    elif cuda_visible_devices is not None:
        devices = [str(d) for d in cuda_visible_devices]
    else:
        devices = visible_gpus()
    plugin = plugin if plugin is not None else GPUWorkerPlugin()
    if allocator is True:
        allocator = HostAllocatorPlugin()
    if kwargs.get("processes", True) is False:
        allocator = None  # in-process workers share the caller's process: leave its malloc alone
    cluster = _start_cluster(devices, n_workers, threads_per_worker, kwargs)
    try:
        with Client(cluster) as client:
            client.register_plugin(plugin, name=plugin.name)
            if allocator:
                client.register_plugin(allocator, name=allocator.name)
            if plate_page:
                from hcsgraph.dashboard import register_plate_page

                register_plate_page(client)
    except BaseException:
        cluster.close()
        raise
    return cluster


def _start_cluster(devices: list[str], n_workers: int | None, threads_per_worker: int,
                   kwargs: dict[str, Any]) -> LocalCluster:
    if not devices:
        logger.info(
            "no GPU visible: starting a CPU LocalCluster; GPU steps need their CPU versions to run"
        )
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, **kwargs)
    else:
        if n_workers is None:
            n_workers = len(devices)
        if n_workers > len(devices):
            raise ValueError(
                f"n_workers={n_workers} but only {len(devices)} GPU(s) are visible: one worker per GPU"
            )
        if kwargs.pop("processes", True) is not True:
            raise ValueError(
                "GPU workers need processes=True: each worker process has its own CUDA_VISIBLE_DEVICES"
            )
        resources = {GPU_RESOURCE: 1, **(kwargs.pop("resources", None) or {})}
        if "memory_limit" not in kwargs:  # split host memory between the workers, as LocalCluster does
            kwargs["memory_limit"] = parse_memory_limit("auto", 1, n_workers, logger=logger)
        logger.info("starting %d GPU worker(s) on GPU(s) %s", n_workers, ",".join(devices[:n_workers]))
        cluster = GPULocalCluster(
            devices, n_workers, threads_per_worker=threads_per_worker, resources=resources, **kwargs
        )
    return cluster


def gpu_resources_by_worker(client: Client) -> dict[str, float]:
    """The ``GPU`` resource each worker advertises (0 for workers without it)."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return {addr: float((info.get("resources") or {}).get(GPU_RESOURCE, 0)) for addr, info in workers.items()}


def cluster_gpu_count(client: Client) -> int:
    """Sum of the ``GPU`` resources the cluster's workers advertise."""
    return int(sum(gpu_resources_by_worker(client).values()))


def require_gpu_workers(client: Client, step_names: Iterable[str], amount: float = 1.0) -> None:
    """Raise :class:`NoGPUWorkersError` naming ``step_names`` unless some worker offers ``amount`` of ``GPU``.

    Call it before submitting GPU tasks: a task asking for a resource no worker has would
    otherwise wait in ``no-worker`` forever.
    """
    step_names = list(step_names)
    if not step_names:
        return
    resources = gpu_resources_by_worker(client)
    if not any(value >= amount for value in resources.values()):
        raise NoGPUWorkersError(step_names, len(resources), amount)
