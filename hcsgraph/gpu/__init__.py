"""GPU workers: device pinning, per-thread CUDA streams, memory pools, OOM recovery, cleanup.

See ``docs/gpu.md`` ("Running on GPUs") for cluster setup.
"""

from hcsgraph.gpu.cluster import (
    GPU_RESOURCE,
    GPULocalCluster,
    NoGPUWorkersError,
    cluster_gpu_count,
    local_cluster,
    require_gpu_workers,
)
from hcsgraph.gpu.devices import DeviceInfo, current_device, current_device_info, visible_gpus
from hcsgraph.gpu.oom import (
    GPUOutOfMemoryError,
    Recovery,
    is_oom_error,
    run_with_oom_recovery,
    summarize_recoveries,
)
from hcsgraph.gpu.plugin import GPUWorkerPlugin
from hcsgraph.gpu.streams import get_stream, synchronize_stream, task_stream, task_streams

__all__ = [
    "GPU_RESOURCE",
    "DeviceInfo",
    "GPULocalCluster",
    "GPUOutOfMemoryError",
    "GPUWorkerPlugin",
    "NoGPUWorkersError",
    "Recovery",
    "cleanup_all_gpu_frameworks",
    "cleanup_gpu_memory_by_framework",
    "cluster_gpu_count",
    "current_device",
    "current_device_info",
    "get_stream",
    "is_oom_error",
    "local_cluster",
    "require_gpu_workers",
    "run_with_oom_recovery",
    "summarize_recoveries",
    "synchronize_stream",
    "task_stream",
    "task_streams",
    "visible_gpus",
]


def __getattr__(name: str):
    """The cleanup functions, imported on first use."""
    if name in ("cleanup_all_gpu_frameworks", "cleanup_gpu_memory_by_framework"):
        from hcsgraph.gpu import cleanup

        return getattr(cleanup, name)
    raise AttributeError(f"module 'hcsgraph.gpu' has no attribute {name!r}")
