"""Conversions between memory types: exact values, dtype and shape; clear errors; the table."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from hcsgraph.config import MemoryType
from hcsgraph.memory import (
    ConversionMethod,
    MemoryConversionError,
    MissingLibraryError,
    conversion_table,
    conversion_table_markdown,
    convert_memory,
    convert_memory_with_method,
    is_installed,
    memory_type_of,
    supported_dtypes,
    to_host,
)

CPU_TYPES = [MemoryType.NUMPY, MemoryType.TORCH, MemoryType.JAX, MemoryType.TENSORFLOW, MemoryType.PYCLESPERANTO]
DTYPES = ["uint8", "uint16", "int32", "float32", "bool"]
DOC = Path(__file__).resolve().parents[2] / "docs" / "memory_conversions.md"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", CPU_TYPES, ids=lambda m: m.value)
@pytest.mark.parametrize("source", CPU_TYPES, ids=lambda m: m.value)
def test_round_trip_is_exact(source, target, dtype, require, sample):
    require(source)
    require(target)
    original = sample(dtype)
    for memory_type in (source, target):
        if dtype not in supported_dtypes(memory_type):
            with pytest.raises(MemoryConversionError, match=f"cannot hold dtype {dtype}") as info:
                convert_memory(original, MemoryType.NUMPY, memory_type)
            assert info.value.method == "dtype check"
            return
    data = convert_memory(original, "numpy", source)
    converted, method = convert_memory_with_method(data, source, target)
    assert memory_type_of(converted) is target
    if source is not target and MemoryType.PYCLESPERANTO not in (source, target):
        # Every CPU pair but OpenCL goes through DLPack; TensorFlow copies unaligned buffers.
        expected = {ConversionMethod.DLPACK}
        if target is MemoryType.TENSORFLOW:
            expected.add(ConversionMethod.HOST)
        assert method in expected
    back = to_host(convert_memory(converted, target, source))
    back = to_host(back) if not isinstance(back, np.ndarray) else back
    for result in (to_host(converted), back):
        assert result.dtype == original.dtype
        assert result.shape == original.shape
        np.testing.assert_array_equal(result, original)


def test_numpy_and_torch_share_memory_on_cpu(require):
    torch = require(MemoryType.TORCH)
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    tensor, method = convert_memory_with_method(array, "numpy", "torch")
    assert method is ConversionMethod.DLPACK
    assert tensor.data_ptr() == array.__array_interface__["data"][0]
    tensor[0, 0] = 42.0
    assert array[0, 0] == 42.0
    again = convert_memory(tensor, MemoryType.TORCH, MemoryType.NUMPY)
    assert np.shares_memory(again, array)
    assert isinstance(tensor, torch.Tensor)


def test_unsupported_dtypes_raise_instead_of_casting(require):
    require(MemoryType.JAX)
    with pytest.raises(MemoryConversionError, match="int64") as info:
        convert_memory(np.arange(4, dtype=np.int64), "numpy", "jax")
    error = info.value
    assert (error.source_type, error.target_type, error.method) == ("numpy", "jax", "dtype check")
    assert "jax_enable_x64" in error.reason
    for word in ("numpy", "jax", "dtype check", "int64"):
        assert word in str(error)


def test_pyclesperanto_rejects_bool(require):
    require(MemoryType.PYCLESPERANTO)
    with pytest.raises(MemoryConversionError, match="cannot hold dtype bool"):
        convert_memory(np.ones((2, 2), dtype=bool), "numpy", "pyclesperanto")


def test_error_carries_its_four_fields_and_pickles():
    error = MemoryConversionError(MemoryType.TORCH, "numpy", ConversionMethod.HOST, "no room")
    assert (error.source_type, error.target_type, error.method, error.reason) == ("torch", "numpy", "host", "no room")
    assert str(error) == "cannot convert torch → numpy via host: no room"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.source_type, copy.method, copy.reason) == ("torch", "host", "no room")


def test_source_type_must_match_the_data(require):
    require(MemoryType.TORCH)
    with pytest.raises(MemoryConversionError, match="the data is a numpy array") as info:
        convert_memory(np.zeros(3), "torch", "numpy")
    assert info.value.method == "type check"
    with pytest.raises(MemoryConversionError, match="cannot tell the memory type of a builtins.list"):
        convert_memory([1, 2, 3], "numpy", "torch")
    with pytest.raises(ValueError, match="'pytorch' is not a valid MemoryType"):
        convert_memory(np.zeros(3), "numpy", "pytorch")


def test_awkward_numpy_inputs_keep_their_values(require):
    require(MemoryType.TORCH)
    require(MemoryType.TENSORFLOW)
    big_endian = np.arange(20, dtype=">u2").reshape(4, 5)
    strided = np.arange(40, dtype=np.float32).reshape(4, 10)[:, ::-2]
    readonly = np.arange(6, dtype=np.int32)
    readonly.flags.writeable = False
    for array in (big_endian, strided, readonly):
        for target in ("torch", "tensorflow", "jax"):
            result = to_host(convert_memory(array, "numpy", target))
            assert result.dtype == array.dtype.newbyteorder("=")
            np.testing.assert_array_equal(result, array)


def test_torch_tensor_that_requires_grad_falls_back_to_host(require):
    torch = require(MemoryType.TORCH)
    tensor = torch.arange(6, dtype=torch.float32, requires_grad=True)
    array, method = convert_memory_with_method(tensor, "torch", "numpy")
    assert method is ConversionMethod.HOST  # DLPack refuses tensors that require grad
    np.testing.assert_array_equal(array, np.arange(6, dtype=np.float32))


def test_gpu_id_without_a_device_keeps_data_on_the_cpu(require):
    torch = require(MemoryType.TORCH)
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present; this test covers CPU-only machines")
    tensor = convert_memory(np.ones((2, 2), np.float32), "numpy", "torch", gpu_id=0)
    assert tensor.device.type == "cpu"


def test_cupy_without_cuda_is_a_clear_error():
    if not is_installed(MemoryType.CUPY):
        with pytest.raises(MissingLibraryError, match=r"pip install hcsgraph\[gpu\]"):
            convert_memory(np.zeros(3), "numpy", "cupy")
        return
    import cupy

    if cupy.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(MemoryConversionError, match="no CUDA device or driver"):
        convert_memory(np.zeros(3), "numpy", "cupy")


@pytest.mark.parametrize("other", [MemoryType.NUMPY, MemoryType.TORCH], ids=lambda m: m.value)
def test_cupy_round_trip_on_gpu(other, require, sample):
    cupy = require(MemoryType.CUPY)
    require(other)
    for dtype in DTYPES:
        original = sample(dtype)
        on_gpu = convert_memory(convert_memory(original, "numpy", other), other, "cupy", gpu_id=0)
        assert isinstance(on_gpu, cupy.ndarray)
        np.testing.assert_array_equal(to_host(convert_memory(on_gpu, "cupy", other)), original)


def test_table_lists_every_pair_with_host_last():
    table = conversion_table()
    assert len(table) == len(MemoryType) * (len(MemoryType) - 1)
    methods = {(source, target): found for source, target, found in table}
    assert all(found[-1] is ConversionMethod.HOST for found in methods.values())
    assert methods[MemoryType.TORCH, MemoryType.JAX][0] is ConversionMethod.DLPACK
    assert methods[MemoryType.CUPY, MemoryType.TORCH] == list(ConversionMethod)[1:]
    assert methods[MemoryType.NUMPY, MemoryType.PYCLESPERANTO] == [ConversionMethod.HOST]


def test_committed_doc_matches_the_registry():
    assert DOC.read_text(encoding="utf-8") == conversion_table_markdown(), (
        "docs/memory_conversions.md is stale: run python -m hcsgraph.memory.convert docs/memory_conversions.md"
    )


def test_unaligned_buffers_reach_tensorflow_by_copy(require):
    require(MemoryType.TENSORFLOW)
    buffer = np.zeros(200, np.uint8)
    offset = (32 - buffer.ctypes.data) % 64  # 32 bytes off TensorFlow's 64-byte alignment
    array = buffer[offset : offset + 96].view(np.float32).reshape(2, 3, 4)
    array[...] = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    tensor, method = convert_memory_with_method(array, "numpy", "tensorflow")
    assert method is ConversionMethod.HOST
    np.testing.assert_array_equal((tensor * 0.5).numpy(), array * 0.5)  # usable without a crash
