"""Detecting memory types, and importing libraries lazily and in a safe order."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from hcsgraph.config import MemoryType
from hcsgraph.memory import MissingLibraryError, as_memory_type, convert_memory, memory_type_of
from hcsgraph.memory.libraries import import_library


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "memory_type", [MemoryType.TORCH, MemoryType.JAX, MemoryType.TENSORFLOW, MemoryType.PYCLESPERANTO]
)
def test_memory_type_of_each_library(memory_type, require):
    require(memory_type)
    array = convert_memory(np.zeros((2, 3), np.float32), "numpy", memory_type)
    assert memory_type_of(array) is memory_type


def test_memory_type_of_numpy_and_subclasses(require):
    torch = require(MemoryType.TORCH)
    assert memory_type_of(np.zeros(3)) is MemoryType.NUMPY
    assert memory_type_of(np.ma.masked_array([1, 2])) is MemoryType.NUMPY
    assert memory_type_of(torch.nn.Parameter(torch.zeros(2))) is MemoryType.TORCH


@pytest.mark.parametrize("obj", [[1, 2], 3.0, np.float32(1.0), "image", None])
def test_memory_type_of_non_arrays_names_the_type(obj):
    with pytest.raises(TypeError, match=type(obj).__qualname__):
        memory_type_of(obj)


def test_as_memory_type_accepts_member_and_string():
    assert as_memory_type("Torch") is MemoryType.TORCH
    assert as_memory_type(MemoryType.JAX) is MemoryType.JAX
    with pytest.raises(ValueError, match="'opencl' is not a valid MemoryType"):
        as_memory_type("opencl")


def test_import_is_cheap_and_detection_imports_nothing():
    result = _run(
        "import sys, numpy as np\n"
        "import hcsgraph.memory as m\n"
        "m.memory_type_of(np.zeros(2))\n"
        "heavy = [n for n in ('torch', 'jax', 'tensorflow', 'cupy', 'pyclesperanto', 'pyclesperanto_prototype',"
        " 'pyopencl') if n in sys.modules]\n"
        "print(heavy)\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_missing_library_error_names_the_extra():
    error = MissingLibraryError(MemoryType.TENSORFLOW)
    assert isinstance(error, ImportError)
    assert "pip install hcsgraph[tf]" in str(error) and error.library == "tensorflow"


def test_tensorflow_and_pyclesperanto_in_one_process(require):
    """hcsgraph imports TensorFlow first, then pyclesperanto: PoCL must not crash the process."""
    require(MemoryType.PYCLESPERANTO)
    require(MemoryType.TENSORFLOW)
    result = _run(
        "import numpy as np\n"
        "from hcsgraph.memory import convert_memory, to_host\n"
        "a = np.arange(12, dtype=np.uint16).reshape(3, 4)\n"
        "t = convert_memory(a, 'numpy', 'tensorflow')\n"
        "c = convert_memory(t, 'tensorflow', 'pyclesperanto')\n"
        "from hcsgraph.memory.libraries import import_library\n"
        "cle = import_library('pyclesperanto')\n"
        "m = cle.maximum_box(c, radius_x=1, radius_y=1)\n"
        "back = to_host(convert_memory(c, 'pyclesperanto', 'tensorflow'))\n"
        "assert back.dtype == a.dtype and (back == a).all()\n"
        "print(int(to_host(m).max()))\n"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "11"


def test_pyclesperanto_after_a_foreign_tensorflow_import_is_a_clear_error(require):
    require(MemoryType.TENSORFLOW)
    from hcsgraph.memory.libraries import _pocl_registered, is_installed

    if not (is_installed(MemoryType.PYCLESPERANTO) and _pocl_registered()):
        pytest.skip("needs pyclesperanto on the PoCL OpenCL runtime")
    result = _run(
        "import tensorflow\n"
        "import numpy as np\n"
        "from hcsgraph.memory import convert_memory\n"
        "try:\n"
        "    convert_memory(np.zeros((2, 2), np.float32), 'numpy', 'pyclesperanto')\n"
        "except RuntimeError as exc:\n"
        "    print('refused:', exc)\n"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: pyclesperanto cannot start OpenCL (PoCL) after TensorFlow" in result.stdout


def test_import_library_returns_the_module(require):
    require(MemoryType.TORCH)
    assert import_library(MemoryType.TORCH).__name__ == "torch"
    assert import_library("numpy") is np
