"""Synthetic images with known blobs for the function tests."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

SHAPE = (128, 128)
COUNTS = (7, 4, 1)
"""Blobs drawn in each Z plane of the ``blobs`` stack ."""


def draw_blobs(counts=COUNTS, shape=SHAPE, seed=0, dtype=np.uint16) -> np.ndarray:
    """A [Z, Y, X] stack: disks of radius 5-8 at 1500 on a sloped background of ~200 with noise."""
    rng = np.random.default_rng(seed)
    stack = np.zeros((len(counts), *shape), dtype=np.float64)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    grid = [(y, x) for y in range(16, shape[0] - 12, 24) for x in range(16, shape[1] - 12, 24)]
    for z, count in enumerate(counts):
        for index in rng.choice(len(grid), size=count, replace=False):
            cy, cx = grid[index]
            rr, cc = disk((cy + rng.integers(-2, 3), cx + rng.integers(-2, 3)), rng.integers(5, 9), shape=shape)
            stack[z, rr, cc] = 1500
        stack[z] += 150 + 0.5 * xx + 0.3 * yy
    stack += rng.normal(0, 25, stack.shape)
    stack = np.clip(stack, 0, None)
    return stack.astype(dtype)


@pytest.fixture(scope="session")
def blobs() -> np.ndarray:
    """uint16 stack with ``COUNTS`` blobs per plane."""
    return draw_blobs()


@pytest.fixture(scope="session")
def blobs_float() -> np.ndarray:
    """The same scene as float32."""
    return draw_blobs(dtype=np.float32)


def _opencl_reason() -> str | None:
    try:
        from hcsgraph.config import MemoryType
        from hcsgraph.memory.libraries import import_library

        cle = import_library(MemoryType.PYCLESPERANTO)
        if cle.__name__ != "pyclesperanto":
            return f"{cle.__name__} is in use; the built-ins need pyclesperanto >= 0.25"
        if not cle.list_available_devices():
            return "no OpenCL device"
    except Exception as exc:  # noqa: BLE001 - any failure to start OpenCL means: skip
        return f"OpenCL unavailable: {exc}"
    return None


@pytest.fixture(scope="session")
def cle():
    """pyclesperanto, or a skip naming why OpenCL cannot run here."""
    reason = _opencl_reason()
    if reason:
        pytest.skip(reason)
    import pyclesperanto

    return pyclesperanto


@pytest.fixture(scope="session")
def blob_counts() -> tuple[int, ...]:
    """The number of blobs drawn in each plane of ``blobs``."""
    return COUNTS


@pytest.fixture(scope="session")
def make_blobs():
    """The blob generator, for tests that need another scene."""
    return draw_blobs
