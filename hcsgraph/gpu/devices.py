"""Which CUDA devices a machine and a worker process can use.

hcsgraph follows dask-cuda's conventions: one worker process per GPU, each started with
``CUDA_VISIBLE_DEVICES`` rotated so that its own GPU comes first. Inside a worker process the
GPU is therefore CUDA ordinal 0, whatever its number on the machine.

Nothing here initialises CUDA in the calling process unless a driver is present: the checks
on a machine without an NVIDIA driver are file-system look-ups only.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

logger = logging.getLogger("hcsgraph.gpu")

WORKER_ATTRIBUTE = "_hcsgraph_gpu"
"""Attribute of a ``distributed.Worker`` holding its :class:`DeviceInfo` (set by the plugin)."""

_HIDDEN = {"", "-1", "none", "nodevfiles", "void"}


@dataclass(frozen=True)
class DeviceInfo:
    """The GPU a worker uses.

    ``device_id`` is the CUDA ordinal inside the worker process (what ``torch.device("cuda", i)``
    and ``cupy.cuda.Device(i)`` take), or None when the worker has no GPU. ``physical`` is the
    matching ``CUDA_VISIBLE_DEVICES`` entry (a machine index or a GPU UUID). ``reason`` says how
    the device was chosen, or why there is none. ``pools`` lists the memory pools configured.
    """

    device_id: int | None
    physical: str | None = None
    visible_devices: tuple[str, ...] = ()
    reason: str = ""
    pools: tuple[str, ...] = field(default=())

    @property
    def has_gpu(self) -> bool:
        """True when the worker computes on a GPU."""
        return self.device_id is not None


def parse_visible_devices(value: str | None) -> list[str] | None:
    """``CUDA_VISIBLE_DEVICES`` as a list of entries; None when unset, [] when it hides every GPU."""
    if value is None:
        return None
    value = value.strip()
    if value.lower() in _HIDDEN:
        return []
    return [item.strip() for item in value.split(",") if item.strip()]


def cycled_visible_devices(index: int, devices: list[str]) -> str:
    """``CUDA_VISIBLE_DEVICES`` for worker ``index``: the device list rotated so that its GPU comes first."""
    if not devices:
        raise ValueError("no devices to cycle")
    index %= len(devices)
    return ",".join(devices[index:] + devices[:index])


def nvidia_driver_present() -> bool:
    """True when an NVIDIA driver is installed (a cheap check that initialises nothing)."""
    return (
        os.path.exists("/proc/driver/nvidia/version")
        or os.path.exists("/dev/nvidiactl")
        or os.path.exists("/usr/lib/wsl/lib/libcuda.so")
        or shutil.which("nvidia-smi") is not None
    )


def _nvml_device_count() -> int | None:
    try:
        pynvml = importlib.import_module("pynvml")
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no usable driver
        return None


def _nvidia_smi_device_count() -> int | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def visible_gpus() -> list[str]:
    """The GPUs this machine offers to new worker processes, as ``CUDA_VISIBLE_DEVICES`` entries.

    ``CUDA_VISIBLE_DEVICES`` wins when it is set; otherwise the GPUs are counted through NVML
    (``pynvml``) or ``nvidia-smi``, without initialising CUDA. Empty without a driver.
    """
    if not nvidia_driver_present():
        return []
    from_env = parse_visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"))
    if from_env is not None:
        return from_env
    count = _nvml_device_count()
    if count is None:
        count = _nvidia_smi_device_count() or 0
    return [str(i) for i in range(count)]


def process_cuda_device_count() -> int:
    """Number of CUDA devices this process can use (honours ``CUDA_VISIBLE_DEVICES``).

    Asks cupy, then torch, and only when a driver is present; 0 otherwise.
    """
    if not nvidia_driver_present():
        return 0
    if parse_visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES")) == []:
        return 0
    try:
        cupy = importlib.import_module("cupy")
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # noqa: BLE001 - cupy missing or no usable device
        pass
    try:
        torch = importlib.import_module("torch")
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - torch missing or built without CUDA
        return 0


def select_device(device_id: int | None = None) -> DeviceInfo:
    """Pick this process's GPU: ``device_id`` when given, else the first of ``CUDA_VISIBLE_DEVICES``.

    Returns a :class:`DeviceInfo` with ``device_id=None`` when the process has no usable GPU.
    Raises ValueError when an explicit ``device_id`` does not exist.
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = parse_visible_devices(env)
    count = process_cuda_device_count()
    if count == 0:
        if not nvidia_driver_present():
            reason = "no NVIDIA driver found"
        elif visible == []:
            reason = f"CUDA_VISIBLE_DEVICES={env!r} hides every GPU"
        else:
            reason = "no CUDA library (cupy or a CUDA build of torch) can open a device"
        return DeviceInfo(None, None, tuple(visible or ()), reason)
    if device_id is None:
        ordinal = 0
        reason = "first entry of CUDA_VISIBLE_DEVICES" if visible else "CUDA device 0"
    else:
        if not 0 <= device_id < count:
            raise ValueError(
                f"GPU device_id={device_id} does not exist: this process sees {count} GPU(s) "
                f"(CUDA_VISIBLE_DEVICES={env!r})"
            )
        ordinal = device_id
        reason = "explicit device_id"
    physical = visible[ordinal] if visible and ordinal < len(visible) else str(ordinal)
    return DeviceInfo(ordinal, physical, tuple(visible or ()), reason)


def current_device_info() -> DeviceInfo | None:
    """The :class:`DeviceInfo` of the worker running the current task, or None outside a worker.

    Cheap: where ``distributed`` is not imported there is no worker, and nothing is imported.
    """
    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import get_worker

        return getattr(get_worker(), WORKER_ATTRIBUTE, None)
    except (ImportError, ValueError):
        return None


def current_device() -> int | None:
    """CUDA ordinal of the GPU of the worker running the current task; None without a GPU.

    Reads what :class:`~hcsgraph.gpu.plugin.GPUWorkerPlugin` recorded on the worker. Outside a
    worker, or on a worker without the plugin, returns None.
    """
    info = current_device_info()
    return info.device_id if info is not None else None
