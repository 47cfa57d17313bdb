"""Pipelines of FunctionSteps compiled into Dask graphs."""

from hcsgraph.pipeline.contracts import special_inputs, special_outputs
from hcsgraph.pipeline.errors import (
    OutputExistsError,
    PipelineCompileError,
    PipelineError,
    StepExecutionError,
)
from hcsgraph.pipeline.graph import PipelineGraph
from hcsgraph.pipeline.result import RunResult
from hcsgraph.pipeline.step import FunctionStep, Pipeline

__all__ = [
    "FunctionStep",
    "OutputExistsError",
    "Pipeline",
    "PipelineCompileError",
    "PipelineError",
    "PipelineGraph",
    "RunResult",
    "StepExecutionError",
    "special_inputs",
    "special_outputs",
]
