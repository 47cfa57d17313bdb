"""``GPUWorkerPlugin``: pins a worker to its GPU, sets up memory pools, cleans up on close.

Register it on any cluster::

    client.register_plugin(GPUWorkerPlugin())

On a worker without a GPU it does nothing but say so in the worker log (logger ``hcsgraph.gpu``,
shown on the dashboard's worker log page) and record ``device_id=None``.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import replace
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from hcsgraph.gpu.devices import WORKER_ATTRIBUTE, DeviceInfo, select_device

logger = logging.getLogger("hcsgraph.gpu")

EVENT_TOPIC = "hcsgraph-gpu"
"""Topic of the structured events the plugin logs (``client.get_events(EVENT_TOPIC)``)."""

DEFAULT_TORCH_ALLOC_CONF = "expandable_segments:True"


class GPUWorkerPlugin(WorkerPlugin):
    """Give each worker its GPU, memory pools and a clean exit.

    ``device_id``: CUDA ordinal inside the worker process; by default the first entry of
    ``CUDA_VISIBLE_DEVICES`` (ordinal 0), as with one worker per GPU. ``pool_fraction``: cap on
    the share of the GPU's memory the cupy pool (or rmm pool) and torch's allocator may hold;
    None leaves the libraries' defaults. ``torch_alloc_conf`` is written to
    ``PYTORCH_CUDA_ALLOC_CONF`` when the worker has not set it (it only takes effect before torch
    initialises CUDA in that process).
    """

    name = "hcsgraph-gpu"
    idempotent = False

    def __init__(
        self,
        device_id: int | None = None,
        pool_fraction: float | None = None,
        torch_alloc_conf: str | None = DEFAULT_TORCH_ALLOC_CONF,
    ) -> None:
        if device_id is not None and (
            isinstance(device_id, bool) or not isinstance(device_id, int) or device_id < 0
        ):
            raise ValueError(f"device_id={device_id!r} must be a non-negative integer or None")
        if pool_fraction is not None and not 0 < pool_fraction <= 1:
            raise ValueError(f"pool_fraction={pool_fraction!r} must be in (0, 1] or None")
        self.device_id = device_id
        self.pool_fraction = pool_fraction
        self.torch_alloc_conf = torch_alloc_conf

    def setup(self, worker: Any) -> None:
        """Pick the device, configure the pools and record a :class:`DeviceInfo` on the worker."""
        _route_log_to_worker(worker)
        info = select_device(self.device_id)
        if info.device_id is None:
            logger.info("worker %s has no GPU (%s); GPU steps cannot run here", worker.address, info.reason)
        else:
            pools = configure_memory_pools(info.device_id, self.pool_fraction, self.torch_alloc_conf)
            info = replace(info, pools=pools)
            logger.info(
                "worker %s uses GPU %s (CUDA device %d, %s); memory pools: %s",
                worker.address,
                info.physical,
                info.device_id,
                info.reason,
                ", ".join(pools) or "library defaults",
            )
        setattr(worker, WORKER_ATTRIBUTE, info)
        worker.log_event(EVENT_TOPIC, {"action": "setup", "worker": worker.address, **_event(info)})

    def teardown(self, worker: Any) -> None:
        """Free every framework's cached GPU memory and forget the device."""
        info: DeviceInfo | None = getattr(worker, WORKER_ATTRIBUTE, None)
        device_id = info.device_id if info is not None else None
        try:
            from hcsgraph.gpu.cleanup import cleanup_all_gpu_frameworks

            cleanup_all_gpu_frameworks(device_id)
            cleaned = True
        except Exception as exc:  # noqa: BLE001 - teardown must not fail the worker's close
            logger.warning("worker %s: GPU cleanup failed: %s: %s", worker.address, type(exc).__name__, exc)
            cleaned = False
        if hasattr(worker, WORKER_ATTRIBUTE):
            delattr(worker, WORKER_ATTRIBUTE)
        worker.log_event(
            EVENT_TOPIC,
            {"action": "teardown", "worker": worker.address, "device_id": device_id, "cleaned": cleaned},
        )
        _unroute_log(worker)


def _event(info: DeviceInfo) -> dict[str, Any]:
    return {
        "device_id": info.device_id,
        "physical": info.physical,
        "reason": info.reason,
        "pools": list(info.pools),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def _route_log_to_worker(worker: Any) -> None:
    """Send ``hcsgraph.gpu`` records to the worker's own log (what ``client.get_worker_logs()`` shows)."""
    gpu_logger = logging.getLogger("hcsgraph.gpu")
    if gpu_logger.level == logging.NOTSET:
        gpu_logger.setLevel(logging.INFO)
    handlers = [getattr(worker, "_deque_handler", None), *logging.getLogger("distributed").handlers]
    for handler in handlers:
        if handler is not None and handler not in gpu_logger.handlers:
            gpu_logger.addHandler(handler)


def _unroute_log(worker: Any) -> None:
    handler = getattr(worker, "_deque_handler", None)
    if handler is not None:
        logging.getLogger("hcsgraph.gpu").removeHandler(handler)


def _optional(module: str) -> Any | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def configure_memory_pools(
    device_id: int,
    pool_fraction: float | None = None,
    torch_alloc_conf: str | None = DEFAULT_TORCH_ALLOC_CONF,
) -> tuple[str, ...]:
    """Set up the memory pools of the libraries installed in this process; returns what was configured.

    - torch: ``PYTORCH_CUDA_ALLOC_CONF`` (unless set), and a per-process memory fraction when
      ``pool_fraction`` is given;
    - rmm, when installed: a pool allocator on ``device_id`` (capped by ``pool_fraction``), used
      by cupy as its allocator;
    - otherwise cupy's default memory pool, capped by ``pool_fraction``.

    A library that fails to configure is logged and skipped.
    """
    done: list[str] = []
    if torch_alloc_conf and not (
        os.environ.get("PYTORCH_CUDA_ALLOC_CONF") or os.environ.get("PYTORCH_ALLOC_CONF")
    ):
        os.environ["PYTORCH_CUDA_ALLOC_CONF"] = torch_alloc_conf
        done.append(f"torch-alloc-conf={torch_alloc_conf}")
    if pool_fraction is not None and (torch := _optional("torch")) is not None:
        try:
            torch.cuda.set_per_process_memory_fraction(pool_fraction, device_id)
            done.append(f"torch-fraction={pool_fraction}")
        except Exception as exc:  # noqa: BLE001
            logger.warning("could not cap torch's GPU memory: %s", exc)
    cupy = _optional("cupy")
    rmm = _optional("rmm")
    if rmm is not None:
        try:
            maximum = None
            if pool_fraction is not None:
                _free, total = rmm.mr.available_device_memory()
                maximum = int(total * pool_fraction) // 256 * 256
            rmm.reinitialize(pool_allocator=True, maximum_pool_size=maximum, devices=device_id)
            done.append("rmm-pool")
            if cupy is not None:
                from rmm.allocators.cupy import rmm_cupy_allocator

                cupy.cuda.set_allocator(rmm_cupy_allocator)
                done.append("cupy-via-rmm")
        except Exception as exc:  # noqa: BLE001
            logger.warning("could not set up the rmm pool: %s", exc)
            rmm = None
    if cupy is not None and rmm is None:
        try:
            cupy.cuda.Device(device_id).use()
            pool = cupy.get_default_memory_pool()
            cupy.cuda.set_allocator(pool.malloc)
            cupy.cuda.set_pinned_memory_allocator(cupy.get_default_pinned_memory_pool().malloc)
            if pool_fraction is not None:
                pool.set_limit(fraction=pool_fraction)
            done.append("cupy-pool" + (f"(fraction={pool_fraction})" if pool_fraction is not None else ""))
        except Exception as exc:  # noqa: BLE001
            logger.warning("could not set up cupy's memory pool: %s", exc)
    return tuple(done)
