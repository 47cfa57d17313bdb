"""The function library by name: list(), get(), register(), the pipeline lookups."""

from __future__ import annotations

import numpy as np
import pytest

import hcsgraph.functions as hf
from hcsgraph.config import MemoryType
from hcsgraph.functions import FunctionRegistry, UnknownFunctionError
from hcsgraph.memory.decorators import numpy as numpy_func
from hcsgraph.memory.decorators import torch as torch_func
from hcsgraph.pipeline.library import cpu_version, resolve_function
from hcsgraph.pipeline.materializers import materialize_cell_counts

BUILTINS = {
    "gaussian_filter", "median_filter", "background_subtract", "threshold_otsu", "binary_opening",
    "label", "max_projection", "mean_projection", "count_cells",
}


def test_list_is_a_table_of_the_builtins():
    table = hf.list()
    assert list(table.columns) == ["name", "memory_types", "description", "special_outputs"]
    assert BUILTINS <= set(table["name"])
    rows = table.set_index("name")
    assert rows.loc["gaussian_filter", "memory_types"] == "numpy, torch, pyclesperanto"
    assert rows.loc["label", "memory_types"] == "numpy, pyclesperanto"
    assert rows.loc["count_cells", "special_outputs"] == "cell_counts"
    assert all(rows.loc[name, "description"] for name in BUILTINS)


def test_get_by_name_and_memory_type():
    assert hf.get("gaussian_filter").input_memory_type is MemoryType.NUMPY
    assert hf.get("gaussian_filter", "torch").input_memory_type is MemoryType.TORCH
    assert hf.get("median_filter", MemoryType.PYCLESPERANTO).input_memory_type is MemoryType.PYCLESPERANTO
    assert hf.available_memory_types("label") == (MemoryType.NUMPY, MemoryType.PYCLESPERANTO)
    assert hf.get("count_cells").special_outputs["cell_counts"] is materialize_cell_counts


def test_unknown_name_suggests_close_names():
    with pytest.raises(UnknownFunctionError) as info:
        hf.get("gausian_filter")
    assert isinstance(info.value, KeyError)
    assert "'gausian_filter'" in str(info.value) and "did you mean 'gaussian_filter'" in str(info.value)
    with pytest.raises(UnknownFunctionError, match="'label' has no torch version.*numpy, pyclesperanto"):
        hf.get("label", "torch")
    with pytest.raises(UnknownFunctionError, match="did you mean"):
        hf.available_memory_types("max_projektion")


def test_pipeline_lookups():
    assert resolve_function("threshold_otsu", "torch") is hf.get("threshold_otsu", "torch")
    assert cpu_version("gaussian_filter") is hf.get("gaussian_filter")
    assert cpu_version(hf.get("median_filter", "torch")) is hf.get("median_filter")
    assert cpu_version(hf.get("median_filter")) is hf.get("median_filter")
    assert cpu_version(lambda x: x) is None
    with pytest.raises(UnknownFunctionError):
        resolve_function("nope_filter", "numpy")


def test_register_user_functions_on_a_private_registry():
    registry = FunctionRegistry()

    @numpy_func
    def invert(stack):
        """Invert a uint8 stack."""
        return 255 - stack

    @torch_func
    def invert_torch(stack):
        """Invert a uint8 stack in torch."""
        return 255 - stack

    registry.register("invert", invert)
    registry.register("invert", invert_torch)
    assert registry.available_memory_types("invert") == (MemoryType.NUMPY, MemoryType.TORCH)
    assert registry.table().loc[0, "description"] == "Invert a uint8 stack."
    assert invert.oom_splittable is True
    np.testing.assert_array_equal(registry.get("invert")(np.zeros((1, 2, 2), np.uint8)), 255)
    with pytest.raises(ValueError, match="already has a numpy version"):
        registry.register("invert", lambda s: s, "numpy")
    with pytest.raises(ValueError, match="no memory type"):
        registry.register("plain", lambda s: s)
    registry.register("plain", lambda s: s, memory_type="numpy", description="identity")
    assert registry.table().set_index("name").loc["plain", "description"] == "identity"


def test_register_in_the_package_registry_is_listed():
    @numpy_func
    def hcsgraph_test_double(stack):
        """Double every pixel."""
        return stack * 2

    hf.register("hcsgraph_test_double", hcsgraph_test_double)
    try:
        assert "hcsgraph_test_double" in set(hf.list()["name"])
        assert resolve_function("hcsgraph_test_double") is hcsgraph_test_double
    finally:
        hf.registry.unregister("hcsgraph_test_double")
    assert "hcsgraph_test_double" not in set(hf.list()["name"])
