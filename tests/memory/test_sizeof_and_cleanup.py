"""dask.sizeof reports the bytes each array holds; GPU cleanup is a safe no-op without a device."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from dask.sizeof import sizeof

import hcsgraph.memory  # noqa: F401 - registers the sizeof handlers
from hcsgraph.config import MemoryType
from hcsgraph.gpu.cleanup import cleanup_all_gpu_frameworks, cleanup_gpu_memory_by_framework
from hcsgraph.memory import convert_memory


@pytest.mark.parametrize(
    "memory_type", [MemoryType.TORCH, MemoryType.JAX, MemoryType.TENSORFLOW, MemoryType.PYCLESPERANTO],
    ids=lambda m: m.value,
)
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_sizeof_is_the_bytes_held(memory_type, dtype, require):
    require(memory_type)
    array = np.zeros((3, 64, 50), dtype=dtype)
    converted = convert_memory(array, "numpy", memory_type)
    assert sizeof(converted) == array.nbytes


def test_sizeof_of_a_prototype_opencl_array(require):
    require(MemoryType.PYCLESPERANTO)
    pytest.importorskip("pyclesperanto_prototype")
    from pyclesperanto_prototype._tier0._pycl import OCLArray

    array = np.zeros((2, 30, 40), np.uint16)
    assert sizeof(OCLArray.from_array(array)) == array.nbytes


def test_cleanup_without_a_device_does_nothing(require):
    torch = require(MemoryType.TORCH)
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert cleanup_gpu_memory_by_framework("torch") is False
    assert cleanup_gpu_memory_by_framework(MemoryType.NUMPY, device_id=0) is False
    results = cleanup_all_gpu_frameworks(device_id=0)
    assert set(results) == {m for m in MemoryType if m is not MemoryType.NUMPY}
    assert not any(results[m] for m in (MemoryType.TORCH, MemoryType.CUPY, MemoryType.JAX, MemoryType.TENSORFLOW))


def test_cleanup_imports_no_library():
    code = (
        "import sys\n"
        "from hcsgraph.gpu.cleanup import cleanup_all_gpu_frameworks\n"
        "print(sorted(k.value for k, v in cleanup_all_gpu_frameworks().items() if v))\n"
        "print([n for n in ('torch', 'jax', 'tensorflow', 'cupy', 'pyclesperanto') if n in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "[]"]


@pytest.mark.gpu
def test_torch_cleanup_frees_the_cache(require):
    torch = require(MemoryType.TORCH)
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    block = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda:0")
    del block
    assert torch.cuda.memory_reserved(0) > 0
    assert cleanup_gpu_memory_by_framework("torch", device_id=0) is True
    assert torch.cuda.memory_reserved(0) == 0
