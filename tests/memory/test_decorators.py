"""Memory type decorators: declarations, direct calls, no rescaling, missing libraries."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from hcsgraph.config import MemoryType
from hcsgraph.memory import MissingLibraryError, is_installed, memory_type_of, to_host
from hcsgraph.memory import decorators as d
from hcsgraph.pipeline.contracts import get_special_outputs, special_outputs

LIBRARY_DECORATORS = {
    MemoryType.NUMPY: d.numpy,
    MemoryType.TORCH: d.torch,
    MemoryType.JAX: d.jax,
    MemoryType.TENSORFLOW: d.tensorflow,
}


@pytest.mark.parametrize("memory_type", list(LIBRARY_DECORATORS), ids=lambda m: m.value)
def test_bare_and_called_forms_declare_and_convert(memory_type, require):
    require(memory_type)
    decorator = LIBRARY_DECORATORS[memory_type]
    seen = []

    def halve(stack):
        """Halve every pixel."""
        seen.append(memory_type_of(stack))
        return stack * 0.5

    for wrapped in (decorator(halve), decorator(oom_recovery=False)(halve)):
        assert wrapped.input_memory_type is memory_type and wrapped.output_memory_type is memory_type
        assert wrapped.__wrapped__ is halve and wrapped.__name__ == "halve"
        assert wrapped.__doc__ == "Halve every pixel."
        image = np.full((2, 3, 4), 3.0, dtype=np.float32)
        result = wrapped(image)
        assert memory_type_of(result) is memory_type
        out = to_host(result)
        assert out.dtype == np.float32  # never rescaled or recast
        np.testing.assert_array_equal(out, np.full((2, 3, 4), 1.5, np.float32))
    assert seen == [memory_type, memory_type]
    assert decorator(halve).oom_recovery is (memory_type is not MemoryType.NUMPY)
    assert decorator(oom_recovery=False)(halve).oom_recovery is False


def test_memory_types_mixes_input_and_output(require):
    torch = require(MemoryType.TORCH)

    @d.memory_types(input_type="numpy", output_type="torch")
    def to_tensor(stack):
        assert isinstance(stack, np.ndarray)
        return torch.from_numpy(stack.copy())

    result = to_tensor(torch.from_numpy(np.arange(6, dtype=np.uint16).reshape(1, 2, 3)))
    assert isinstance(result, torch.Tensor) and result.dtype == torch.uint16
    assert to_tensor.input_memory_type is MemoryType.NUMPY
    assert to_tensor.output_memory_type is MemoryType.TORCH
    assert to_tensor.oom_recovery is False


def test_float_results_are_not_rescaled(require):
    require(MemoryType.TORCH)

    @d.torch
    def scale(stack):
        return stack.float() * 1000.0

    image = np.array([[[1, 2], [3, 65535]]], dtype=np.uint16)
    out = scale(image)
    assert str(out.dtype) == "torch.float32"
    np.testing.assert_array_equal(to_host(out), image.astype(np.float32) * 1000.0)


@pytest.mark.parametrize("order", ["memory_first", "special_first"])
def test_stacks_with_special_outputs_in_either_order(order, require):
    require(MemoryType.TORCH)

    def count(stack):
        return stack, int(stack.sum())

    if order == "memory_first":
        func = special_outputs("total")(d.torch(count))
    else:
        func = d.torch(special_outputs("total")(count))
    assert list(get_special_outputs(func)) == ["total"]
    assert func.input_memory_type is MemoryType.TORCH
    image, total = func(np.ones((1, 2, 2), np.uint8))
    assert memory_type_of(image) is MemoryType.TORCH and total == 4


def test_decorating_imports_nothing_and_a_missing_library_is_a_clear_error():
    @d.cupy
    def on_gpu(stack):
        return stack

    assert on_gpu.input_memory_type is MemoryType.CUPY
    if is_installed(MemoryType.CUPY):
        pytest.skip("cupy is installed")
    with pytest.raises(MissingLibraryError, match=r"'cupy'.*pip install hcsgraph\[gpu\].*on_gpu"):
        on_gpu(np.zeros((1, 2, 2)))


def test_non_array_result_is_an_error(require):
    @d.numpy
    def broken(stack):
        return "not an image"

    with pytest.raises(Exception, match="cannot tell the memory type of a builtins.str"):
        broken(np.zeros((1, 2, 2)))


def test_pyclesperanto_decorator_runs_a_real_kernel(require):
    """In a fresh process: on PoCL, new kernels cannot be built once jax and TensorFlow are loaded."""
    require(MemoryType.PYCLESPERANTO)
    code = (
        "import numpy as np\n"
        "from hcsgraph.memory import memory_type_of, to_host\n"
        "from hcsgraph.memory.decorators import pyclesperanto\n"
        "from hcsgraph.memory.libraries import import_library\n"
        "cle = import_library('pyclesperanto')\n"
        "@pyclesperanto\n"
        "def brightest(stack):\n"
        "    return cle.maximum_box(stack, radius_x=1, radius_y=1, radius_z=0)\n"
        "image = np.zeros((1, 3, 3), np.uint16); image[0, 1, 1] = 60000\n"
        "out = brightest(image)\n"
        "assert memory_type_of(out).value == 'pyclesperanto' and brightest.oom_recovery is True\n"
        "host = to_host(out)\n"
        "print(host.dtype, int(host.min()), int(host.max()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "uint16 60000 60000"
