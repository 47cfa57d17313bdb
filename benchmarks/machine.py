"""The machine and library versions a benchmark ran with."""

from __future__ import annotations

import importlib.metadata
import os
import platform

import psutil

PACKAGES = ("hcsgraph", "dask", "distributed", "numpy", "scipy", "scikit-image", "tifffile", "zarr", "numcodecs",
            "pandas", "psutil")


def describe() -> dict[str, object]:
    """Cores, memory, CPU model, OS, Python and package versions."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": _cpu_model(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
