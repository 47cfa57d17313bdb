"""Errors raised when a pipeline is compiled or run."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class for pipeline errors."""


class PipelineCompileError(PipelineError, ValueError):
    """The pipeline cannot be compiled against this plate: nothing has run."""


class OutputExistsError(PipelineCompileError, FileExistsError):
    """The output already holds results: neither ``overwrite`` nor ``resume`` was asked for
    (``replaceable``), or what is there was not written by hcsgraph (not ``replaceable``)."""

    def __init__(self, message: str, output: str = "", existing: tuple[str, ...] = (),
                 replaceable: bool = True) -> None:
        super().__init__(message)
        self.output = output
        self.existing = tuple(existing)
        self.replaceable = replaceable

    def __reduce__(self):
        return (type(self), (str(self), self.output, self.existing, self.replaceable))


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
