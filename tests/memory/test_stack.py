"""stack_slices / unstack_slices in every memory type."""

from __future__ import annotations

import numpy as np
import pytest

from hcsgraph.config import MemoryType
from hcsgraph.memory import convert_memory, memory_type_of, stack_slices, to_host, unstack_slices

CPU_TYPES = [MemoryType.NUMPY, MemoryType.TORCH, MemoryType.JAX, MemoryType.TENSORFLOW, MemoryType.PYCLESPERANTO]


@pytest.mark.parametrize("target", CPU_TYPES, ids=lambda m: m.value)
@pytest.mark.parametrize("source", CPU_TYPES, ids=lambda m: m.value)
def test_stack_and_unstack_round_trip(source, target, require):
    require(source)
    require(target)
    planes = [np.full((4, 5), z, dtype=np.uint16) + np.arange(5, dtype=np.uint16) for z in range(3)]
    slices = [convert_memory(p, "numpy", source) for p in planes]
    stack = stack_slices(slices, target)
    assert memory_type_of(stack) is target
    host = to_host(stack)
    assert host.shape == (3, 4, 5) and host.dtype == np.uint16
    np.testing.assert_array_equal(host, np.stack(planes))
    back = unstack_slices(stack, source)
    assert len(back) == 3
    for plane, item in zip(planes, back, strict=True):
        assert memory_type_of(item) is source
        np.testing.assert_array_equal(to_host(item), plane)


def test_mixed_memory_types_in_one_stack(require):
    require(MemoryType.TORCH)
    require(MemoryType.JAX)
    slices = [np.zeros((2, 2), np.float32), convert_memory(np.ones((2, 2), np.float32), "numpy", "torch"),
              convert_memory(np.full((2, 2), 2, np.float32), "numpy", "jax")]
    stack = stack_slices(slices, "torch")
    np.testing.assert_array_equal(to_host(stack)[:, 0, 0], [0, 1, 2])


def test_stack_errors_name_the_problem():
    with pytest.raises(ValueError, match="empty"):
        stack_slices([], "numpy")
    with pytest.raises(ValueError, match=r"slice 1 has shape \(2, 3\), but slice 0 has shape \(2, 2\)"):
        stack_slices([np.zeros((2, 2)), np.zeros((2, 3))], "numpy")
    with pytest.raises(ValueError, match=r"slice 0 has shape \(1, 2, 2\)"):
        stack_slices([np.zeros((1, 2, 2))], "numpy")
    with pytest.raises(TypeError, match="slice 1 has dtype uint16, but slice 0 has dtype uint8"):
        stack_slices([np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint16)], "numpy")


@pytest.mark.parametrize("shape", [(4, 5), (1, 2, 4, 5)])
def test_unstack_rejects_wrong_dimensions(shape):
    with pytest.raises(ValueError, match=f"got shape {tuple(shape)}".replace("(", r"\(").replace(")", r"\)")):
        unstack_slices(np.zeros(shape), "numpy")
