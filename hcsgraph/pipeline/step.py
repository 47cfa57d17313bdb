"""`FunctionStep` and `Pipeline`: what a user writes.

A step names the function(s) to run and how images are grouped: one task runs per group, a
group being the images that differ only in ``variable_components``, stacked as ``[Z, Y, X]``
in natural order of those components.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import TYPE_CHECKING, Any

from hcsgraph.config import (
    GlobalPipelineConfig,
    MemoryType,
    StepMaterializationConfig,
    coerce_enum,
)
from hcsgraph.pipeline.errors import PipelineCompileError

if TYPE_CHECKING:
    from hcsgraph.pipeline.graph import PipelineGraph

#: Plate components an image is identified by, in key order.
COMPONENTS: tuple[str, ...] = ("well", "site", "channel", "z", "t")

FuncLike = Callable[..., Any] | str


@dataclass(frozen=True)
class FunctionCall:
    """One function of a step with its keyword arguments (a name is resolved at compile time)."""

    func: FuncLike
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The function's name."""
        if isinstance(self.func, str):
            return self.func
        return getattr(self.func, "__name__", type(self.func).__name__)


def _as_chain(func: Any, step_kwargs: Mapping[str, Any], where: str) -> tuple[FunctionCall, ...]:
    """Normalise a callable, a name, a ``(func, kwargs)`` pair or a list of those into a chain."""
    if isinstance(func, list):
        if not func:
            raise PipelineCompileError(f"{where}: an empty function list")
        chain: list[FunctionCall] = []
        for item in func:
            chain.extend(_as_chain(item, {}, where))
        if step_kwargs:
            # Step-level kwargs go to the first function of the chain that accepts them.
            first = chain[0]
            chain[0] = FunctionCall(first.func, {**step_kwargs, **first.kwargs})
        return tuple(chain)
    if isinstance(func, tuple):
        if len(func) != 2 or not isinstance(func[1], Mapping):
            raise PipelineCompileError(f"{where}: a tuple must be (func, kwargs), got {func!r}")
        inner, kwargs = func
        if not (callable(inner) or isinstance(inner, str)):
            raise PipelineCompileError(f"{where}: {inner!r} is neither a callable nor a function name")
        return (FunctionCall(inner, {**step_kwargs, **dict(kwargs)}),)
    if callable(func) or isinstance(func, str):
        return (FunctionCall(func, dict(step_kwargs)),)
    raise PipelineCompileError(
        f"{where}: func must be a callable, a library name, a (func, kwargs) pair, a list or a dict; "
        f"got {type(func).__name__}"
    )


class FunctionStep:
    """One processing step.

    Args:
        func: a callable, a library function name (see ``hcsgraph.functions.list()``), a
            ``(func, kwargs)`` pair, a list of those (run as a chain inside one task), or a dict
            keyed by channel (with ``group_by="channel"``) giving each channel its own function.
        name: the step's name, shown in task keys and on the dashboard; defaults to the function's.
        variable_components: components that vary inside one stack; the others define the group.
        group_by: the component a dict ``func`` is keyed by (only ``"channel"`` or ``"site"``...).
        memory_type: which version of a library function to run (numpy by default); ignored for
            callables, whose decorators declare their own types.
        materialize: also write this step's output under a directory of its own.
        output_dtype: the dtype of the step's output: the result is cast to it when that loses
            nothing (uint16 → int32, say); a lossy cast is an error naming the step.
        allow_cpu_fallback: a GPU step may run its CPU version when the GPU fails or is absent
            (None: ``GPUConfig.cpu_fallback`` of the run's config decides).
        output: ``"labels:<name>"`` also writes the step's result as the label image ``<name>``
            of every field (``labels/<name>/`` in the OME-Zarr plate, with ``image-label``
            metadata); ``"image"`` makes the step's result the field image. Without an
            ``"image"`` step, the field image is the last step's result, or the plate's own
            images when some step writes labels.
        **kwargs: keyword arguments for the function.
    """

    def __init__(
        self,
        func: Any,
        name: str | None = None,
        variable_components: Sequence[str] = ("site",),
        group_by: str | None = None,
        *,
        memory_type: MemoryType | str | None = None,
        materialize: StepMaterializationConfig | None = None,
        output_dtype: Any = None,
        allow_cpu_fallback: bool | None = None,
        output: str | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(variable_components, str):
            variable_components = (variable_components,)
        variable_components = tuple(variable_components)
        for comp in variable_components:
            if comp not in COMPONENTS or comp == "well":
                raise PipelineCompileError(
                    f"variable_components: {comp!r} is not one of {', '.join(c for c in COMPONENTS if c != 'well')}"
                )
        self.variable_components = variable_components
        self.group_by = group_by
        self.memory_type = None if memory_type is None else coerce_enum(MemoryType, memory_type, "memory_type")
        if materialize is not None and not isinstance(materialize, StepMaterializationConfig):
            raise PipelineCompileError(f"materialize={materialize!r} must be a StepMaterializationConfig")
        self.materialize = materialize
        self.output_dtype = output_dtype
        self.allow_cpu_fallback = allow_cpu_fallback
        self.output = _check_output(output, name)
        self.kwargs = dict(kwargs)

        where = f"step {name!r}" if name else "FunctionStep"
        if isinstance(func, Mapping):
            if group_by is None:
                raise PipelineCompileError(f"{where}: a dict of functions needs group_by (e.g. group_by='channel')")
            if group_by not in COMPONENTS or group_by in variable_components or group_by == "well":
                raise PipelineCompileError(
                    f"{where}: group_by={group_by!r} must be a component that is not variable "
                    f"(one of {', '.join(c for c in COMPONENTS if c not in variable_components and c != 'well')})"
                )
            if not func:
                raise PipelineCompileError(f"{where}: an empty function dict")
            self.chains: dict[Any, tuple[FunctionCall, ...]] = {
                _normalise_group_value(k): _as_chain(v, kwargs, f"{where}[{k!r}]") for k, v in func.items()
            }
        else:
            if group_by is not None and group_by not in COMPONENTS:
                raise PipelineCompileError(f"{where}: group_by={group_by!r} is not a component")
            self.chains = {None: _as_chain(func, kwargs, where)}
        self.name = name or self._default_name()

    def _default_name(self) -> str:
        labels = []
        for chain in self.chains.values():
            label = "+".join(call.label for call in chain)
            if label not in labels:
                labels.append(label)
        return "|".join(labels) if len(labels) > 1 else labels[0]

    def chain_for(self, group_value: Any) -> tuple[FunctionCall, ...] | None:
        """The chain that runs for a group whose ``group_by`` component equals ``group_value``."""
        if None in self.chains:
            return self.chains[None]
        return self.chains.get(_normalise_group_value(group_value))

    def spec(self) -> dict[str, Any]:
        """A JSON-friendly description for the run manifest."""
        return {
            "name": self.name,
            "functions": {
                str(k) if k is not None else "*": [
                    {"func": call.label, "kwargs": {kk: repr(vv) for kk, vv in call.kwargs.items()}}
                    for call in chain
                ]
                for k, chain in self.chains.items()
            },
            "variable_components": list(self.variable_components),
            "group_by": self.group_by,
            "memory_type": self.memory_type.value if self.memory_type else None,
            "output": self.output,
            "materialize": None
            if self.materialize is None
            else {"sub_dir": self.materialize.sub_dir, "backend": getattr(self.materialize.backend, "value", None)},
        }

    def __repr__(self) -> str:
        return f"FunctionStep(name={self.name!r}, variable_components={self.variable_components!r})"


def _check_output(output: str | None, name: str | None) -> str | None:
    """``None``, ``"image"`` or ``"labels:<name>"`` (a name safe as a folder name)."""
    if output is None or output == "image":
        return output
    if isinstance(output, str) and output.startswith("labels:"):
        label = output[len("labels:"):]
        if label and all(ch.isalnum() or ch in "-_." for ch in label) and label not in (".", ".."):
            return output
    where = f"step {name!r}" if name else "FunctionStep"
    raise PipelineCompileError(
        f"{where}: output={output!r} must be 'image' or 'labels:<name>' (letters, digits, '-', '_', '.')"
    )


def _normalise_group_value(value: Any) -> Any:
    """Channel keys may be given as ints or strings ('1' and 1 mean the same channel)."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


class Pipeline:
    """An ordered list of steps with a name (the name of the run's span on the dashboard).

    ``config`` (optional) overrides the global configuration passed to :meth:`compile`;
    a step's own ``materialize`` setting overrides both.
    """

    def __init__(
        self,
        steps: Iterable[FunctionStep],
        name: str = "pipeline",
        config: GlobalPipelineConfig | None = None,
    ) -> None:
        self.steps = list(steps)
        for i, step in enumerate(self.steps):
            if not isinstance(step, FunctionStep):
                raise PipelineCompileError(f"steps[{i}] is a {type(step).__name__}, not a FunctionStep")
        if not name or not isinstance(name, str):
            raise PipelineCompileError(f"Pipeline name must be a non-empty string, got {name!r}")
        self.name = name
        self.config = config

    @property
    def step_names(self) -> list[str]:
        """Each step's name in this pipeline, made unique (``gaussian_filter``, ``gaussian_filter_2``).

        The steps themselves are never renamed: one step object may appear twice, or in several
        pipelines.
        """
        names: list[str] = []
        for step in self.steps:
            name, n = step.name, 1
            while name in names:
                n += 1
                name = f"{step.name}_{n}"
            names.append(name)
        return names

    def compile(
        self,
        plate: Any,
        output: str | PathLike[str],
        config: GlobalPipelineConfig | None = None,
        *,
        overwrite: bool | None = None,
        resume: bool = False,
        on_error: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> PipelineGraph:
        """Build the lazy Dask graph that runs this pipeline on ``plate`` and writes ``output``.

        ``plate`` is a :class:`~hcsgraph.plate.PlateIndex` or a path or URL given to ``open_plate``;
        ``output`` a path or a URL (``s3://bucket/results/p07``, any fsspec protocol).
        ``resume=True`` keeps the wells an earlier run completed and runs the rest.
        ``storage_options``: fsspec options of the output (endpoint, credentials profile, anonymous);
        by default those of the plate when it lives on the same protocol, else fsspec's defaults.
        """
        from hcsgraph.pipeline.compiler import compile_pipeline

        return compile_pipeline(
            self, plate, output, config=config, overwrite=overwrite, resume=resume, on_error=on_error,
            storage_options=storage_options,
        )

    def spec(self) -> dict[str, Any]:
        """A JSON-friendly description for the run manifest."""
        return {"name": self.name,
                "steps": [{**s.spec(), "name": n} for s, n in zip(self.steps, self.step_names, strict=True)]}

    def __repr__(self) -> str:
        return f"Pipeline(name={self.name!r}, steps={self.step_names!r})"

    def __len__(self) -> int:
        return len(self.steps)
