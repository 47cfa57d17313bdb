"""Errors raised when a pipeline is compiled or run."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class for pipeline errors."""


class PipelineCompileError(PipelineError, ValueError):
    """The pipeline cannot be compiled against this plate: nothing has run."""


class OutputExistsError(PipelineCompileError, FileExistsError):
    """The output already exists and neither ``overwrite`` nor ``resume`` was asked for."""


class StepExecutionError(PipelineError, RuntimeError):
    """A task failed while running: names the step, the well and the files involved."""

    def __init__(self, step: str, well: str, message: str, files: tuple[str, ...] = (), group: str = ""):
        self.step = step
        self.well = well
        self.files = tuple(files)
        self.group = group
        self.reason = message
        where = f"step {step!r}, well {well}" + (f" ({group})" if group else "")
        shown = ", ".join(self.files[:3]) + (f" and {len(self.files) - 3} more" if len(self.files) > 3 else "")
        text = f"{where}: {message}"
        if shown:
            text += f" [file: {shown}]"
        super().__init__(text)

    def __reduce__(self):
        return (type(self), (self.step, self.well, self.reason, self.files, self.group))
