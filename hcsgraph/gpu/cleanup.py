"""Give cached GPU memory back to the device, per framework.

Each function acts only on a library that is already imported and only when it has a device:
everywhere else it is a no-op that returns ``False``. Nothing here imports a library.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable

from hcsgraph.config import MemoryType

log = logging.getLogger(__name__)


def cleanup_torch_gpu(device_id: int | None = None) -> bool:
    """Empty torch's CUDA caching allocator (on ``device_id``, or the current device)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return False
    gc.collect()
    if device_id is None:
        torch.cuda.empty_cache()
    else:
        with torch.cuda.device(device_id):
            torch.cuda.empty_cache()
    return True


def cleanup_cupy_gpu(device_id: int | None = None) -> bool:
    """Free all unused blocks of cupy's device and pinned memory pools."""
    cupy = sys.modules.get("cupy")
    if cupy is None:
        return False
    try:
        if not cupy.cuda.is_available():
            return False
        gc.collect()
        if device_id is None:
            cupy.get_default_memory_pool().free_all_blocks()
        else:
            with cupy.cuda.Device(device_id):
                cupy.get_default_memory_pool().free_all_blocks()
        cupy.get_default_pinned_memory_pool().free_all_blocks()
    except Exception as exc:  # noqa: BLE001 - a broken driver must not stop a run
        log.warning("cupy GPU cleanup failed: %s", exc)
        return False
    return True


def cleanup_tensorflow_gpu(device_id: int | None = None) -> bool:
    """Drop unreferenced tensors. TensorFlow keeps its GPU allocator for the life of the process."""
    tf = sys.modules.get("tensorflow")
    if tf is None or not hasattr(tf, "config") or not tf.config.list_physical_devices("GPU"):
        return False
    gc.collect()
    return True


def cleanup_jax_gpu(device_id: int | None = None) -> bool:
    """Drop unreferenced arrays and jax's compiled-function caches (they hold device buffers)."""
    jax = sys.modules.get("jax")
    if jax is None or not hasattr(jax, "devices"):
        return False
    try:
        jax.devices("gpu")
    except RuntimeError:
        return False
    gc.collect()
    jax.clear_caches()
    return True


def cleanup_pyclesperanto_gpu(device_id: int | None = None) -> bool:
    """Drop unreferenced OpenCL buffers (pyclesperanto frees a buffer when its array is collected)."""
    if not any(name in sys.modules for name in ("pyclesperanto", "pyclesperanto_prototype")):
        return False
    gc.collect()
    return True


_CLEANERS: dict[MemoryType, Callable[[int | None], bool]] = {
    MemoryType.TORCH: cleanup_torch_gpu,
    MemoryType.CUPY: cleanup_cupy_gpu,
    MemoryType.TENSORFLOW: cleanup_tensorflow_gpu,
    MemoryType.JAX: cleanup_jax_gpu,
    MemoryType.PYCLESPERANTO: cleanup_pyclesperanto_gpu,
}


def cleanup_gpu_memory_by_framework(memory_type: MemoryType | str, device_id: int | None = None) -> bool:
    """Free the cached GPU memory of the framework behind ``memory_type``; True when it did anything."""
    memory_type = MemoryType(memory_type.lower() if isinstance(memory_type, str) else memory_type)
    cleaner = _CLEANERS.get(memory_type)
    return cleaner(device_id) if cleaner is not None else False


def cleanup_all_gpu_frameworks(device_id: int | None = None) -> dict[MemoryType, bool]:
    """Run every framework's cleanup; maps each memory type to whether its cleanup did anything."""
    return {memory_type: cleaner(device_id) for memory_type, cleaner in _CLEANERS.items()}
