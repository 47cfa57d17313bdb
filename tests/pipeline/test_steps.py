"""FunctionStep and Pipeline: the forms a step's function may take, and their validation."""

from __future__ import annotations

import pytest

import hcsgraph.functions
from hcsgraph import FunctionStep, Pipeline
from hcsgraph.pipeline import PipelineCompileError


def double(stack, factor=2):
    return stack * factor


def test_callable_name_and_kwargs():
    step = FunctionStep(double, factor=3)
    assert step.name == "double"
    assert step.chain_for(None)[0].kwargs == {"factor": 3}
    assert step.variable_components == ("site",)


def test_library_name_pair_and_chain():
    step = FunctionStep([("gaussian_filter", {"sigma": 1}), "threshold_otsu"], name="segment")
    chain = step.chain_for(None)
    assert [c.label for c in chain] == ["gaussian_filter", "threshold_otsu"]
    assert chain[0].kwargs == {"sigma": 1}
    assert FunctionStep(("median_filter", {"size": 5})).name == "median_filter"


def test_dict_by_channel_needs_group_by():
    with pytest.raises(PipelineCompileError, match="group_by"):
        FunctionStep({1: "gaussian_filter", 2: "median_filter"})
    step = FunctionStep({1: "gaussian_filter", "2": "median_filter"}, group_by="channel")
    assert step.chain_for(1)[0].label == "gaussian_filter"
    assert step.chain_for(2)[0].label == "median_filter"
    assert step.chain_for(3) is None


def test_bad_forms_are_clear_errors():
    with pytest.raises(PipelineCompileError, match="variable_components"):
        FunctionStep("gaussian_filter", variable_components=("plate",))
    with pytest.raises(PipelineCompileError, match="callable"):
        FunctionStep(42)
    with pytest.raises(PipelineCompileError, match="not a FunctionStep"):
        Pipeline(["gaussian_filter"])


def test_duplicate_step_names_are_made_unique_without_renaming_the_steps():
    step = FunctionStep("gaussian_filter")
    p = Pipeline([step, FunctionStep("gaussian_filter")], name="p")
    assert p.step_names == ["gaussian_filter", "gaussian_filter_2"]
    assert [s.name for s in p.steps] == ["gaussian_filter", "gaussian_filter"]
    again = Pipeline([step, step], name="q")
    assert again.step_names == ["gaussian_filter", "gaussian_filter_2"]
    assert step.name == "gaussian_filter"
    assert [s["name"] for s in again.spec()["steps"]] == ["gaussian_filter", "gaussian_filter_2"]


def test_function_library_lists_what_exists():
    table = hcsgraph.functions.list()
    names = set(table["name"])
    for name in ("gaussian_filter", "median_filter", "background_subtract", "threshold_otsu", "binary_opening",
                 "label", "max_projection", "mean_projection", "count_cells"):
        assert name in names
    row = table.set_index("name").loc["count_cells"]
    assert "cell_counts" in str(row["special_outputs"])
