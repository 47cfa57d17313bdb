"""Fixtures for the memory tests: the array libraries, imported the way hcsgraph imports them."""

from __future__ import annotations

import numpy as np
import pytest

from hcsgraph.config import MemoryType
from hcsgraph.memory.libraries import MissingLibraryError, import_library

CPU_TYPES = [MemoryType.NUMPY, MemoryType.TORCH, MemoryType.JAX, MemoryType.TENSORFLOW, MemoryType.PYCLESPERANTO]


def _require(memory_type: MemoryType):
    """Import a library through hcsgraph (safe import order) or skip the test with the reason."""
    try:
        module = import_library(memory_type)
    except MissingLibraryError as exc:
        pytest.skip(str(exc))
    except Exception as exc:  # e.g. OpenCL without a device
        pytest.skip(f"{memory_type.value} is unusable here: {type(exc).__name__}: {exc}")
    if memory_type is MemoryType.CUPY:
        try:
            available = module.cuda.is_available()
        except Exception:  # noqa: BLE001
            available = False
        if not available:
            pytest.skip("cupy.cuda.is_available() is False: no CUDA device")
    return module


def _sample(dtype: str, shape=(3, 4, 5)) -> np.ndarray:
    """A small array whose values exercise the dtype (extremes included)."""
    size = int(np.prod(shape))
    if dtype == "bool":
        return (np.arange(size) % 3 == 0).reshape(shape)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else np.finfo(dtype)
    values = np.linspace(0, 1, size) * (float(info.max) / 2)
    array = values.astype(dtype).reshape(shape)
    array.flat[0] = info.max
    array.flat[-1] = info.min
    return array


@pytest.fixture(scope="session")
def require():
    """``require(memory_type)``: the library's module, or skip the test with the reason."""
    return _require


@pytest.fixture(scope="session")
def sample():
    """``sample(dtype, shape=(3, 4, 5))``: a small array with the dtype's extremes in it."""
    return _sample
