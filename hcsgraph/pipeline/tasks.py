"""What runs inside each task on a worker: load, convert, step, regroup, write, finalize.

Everything here is small and picklable; pixels only travel between tasks (worker to worker),
never through the client. Under ``on_error="continue"`` a failing task returns a
:class:`Failure` that later tasks of the same group pass along without running.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from dask.sizeof import sizeof

from hcsgraph.config import MemoryType, OnError
from hcsgraph.memory import (  # importing hcsgraph.memory registers dask.sizeof on workers
    convert_to,
    memory_type_of,
)
from hcsgraph.pipeline.contracts import get_special_inputs, get_special_outputs
from hcsgraph.pipeline.errors import StepExecutionError
from hcsgraph.pipeline.guard import RunGuard


@dataclass
class StepOutput:
    """A group's stack after a step, with its special outputs and the time spent so far."""

    stack: Any
    specials: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    recoveries: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ScratchRef:
    """An intermediate stack written to the scratch Zarr store instead of worker memory."""

    path: str
    specials: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    recoveries: tuple[tuple[str, str], ...] = ()
    storage_options: Any = None


@dataclass(frozen=True)
class Failure:
    """A group that failed under ``on_error="continue"``."""

    step: str
    well: str
    group: str
    message: str
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class GroupContext:
    """Where a task sits: its step, well and group, and the run's error policy."""

    step: str
    well: str
    group: str
    on_error: OnError = OnError.STOP
    files: tuple[str, ...] = ()


@sizeof.register(StepOutput)
def _sizeof_step_output(obj: StepOutput) -> int:
    return sizeof(obj.stack) + sizeof(obj.specials)


def _fail(ctx: GroupContext, exc: BaseException, files: tuple[str, ...] = ()) -> Failure:
    """Turn an exception into a Failure (continue) or a StepExecutionError (stop)."""
    files = files or ctx.files
    filename = getattr(exc, "filename", None)
    if not files and isinstance(filename, str | os.PathLike):
        files = (os.fspath(filename),)
    if isinstance(exc, StepExecutionError):
        message, files = exc.reason, exc.files or files
    else:
        message = f"{type(exc).__name__}: {exc}"
    if ctx.on_error is OnError.CONTINUE:
        return Failure(ctx.step, ctx.well, ctx.group, message, tuple(files))
    raise StepExecutionError(ctx.step, ctx.well, message, tuple(files), ctx.group) from exc


def _first_failure(values: Any) -> Failure | None:
    for value in values:
        if isinstance(value, Failure):
            return value
    return None


# ---------------------------------------------------------------------------------------------
# load


def load_group(ctx: GroupContext, paths: tuple[str, ...], dtype: str, yx: tuple[int, ...],
               storage_options: Any = None) -> StepOutput | Failure:
    """Read the group's planes from the plate into one numpy ``[Z, Y, X]`` stack of the plate's dtype.

    A plane of another shape, or of a dtype that does not fit the plate's without loss, is a
    failure naming its file.
    """
    from hcsgraph.plate.reader import read_plane

    start = time.perf_counter()
    if not paths:
        return _fail(ctx, ValueError("the group has no images"))
    stack = np.empty((len(paths), *yx), dtype=np.dtype(dtype))
    for index, path in enumerate(paths):
        try:
            # raises, naming the file, when the plane does not fit
            read_plane(path, out=stack[index], storage_options=storage_options)
        except Exception as exc:  # noqa: BLE001 - reported with the file, well and step
            return _fail(ctx, exc, (path,))
    return StepOutput(stack, timings={ctx.step: time.perf_counter() - start})


# ---------------------------------------------------------------------------------------------
# memory conversions


def _stack_of(data: StepOutput | ScratchRef) -> Any:
    if isinstance(data, ScratchRef):
        return file_manager(data.path, data.storage_options).load_array(data.path, _scratch_backend(data.path))
    return data.stack


def file_manager(path: str, storage_options: Any = None) -> Any:
    """A FileManager for files at ``path``: the package's stores, or the URL store with ``storage_options``."""
    from hcsgraph.io import FileManager
    from hcsgraph.io import location as loc

    if loc.is_url(path):
        from hcsgraph.io.fsspec_store import registry_for_urls

        return FileManager(registry_for_urls(storage_options))
    return FileManager()


def _scratch_backend(path: str) -> str:
    """Scratch stacks are ``.npy`` files (disk) or Zarr arrays."""
    return "disk" if path.endswith(".npy") else "zarr"


def convert_task(ctx: GroupContext, data: Any, target: MemoryType) -> StepOutput | Failure:
    """A conversion edge of the graph: the group's stack in ``target``."""
    if isinstance(data, Failure):
        return data
    start = time.perf_counter()
    try:
        gpu_id = _device_id()
        source = _stack_of(data)
        with _stream(memory_type_of(source), target, device=gpu_id):
            stack = convert_to(source, target, gpu_id)
    except Exception as exc:  # noqa: BLE001
        return _fail(ctx, exc)
    timings = dict(data.timings)
    timings[ctx.step] = timings.get(ctx.step, 0.0) + time.perf_counter() - start
    return StepOutput(stack, dict(data.specials), timings, list(data.recoveries))


def regroup_task(
    ctx: GroupContext, sources: list[Any], picks: tuple[tuple[int, int], ...], target: MemoryType
) -> StepOutput | Failure:
    """Build a new group's stack from slices of other groups' stacks (``picks``: source, slice)."""
    failed = _first_failure(sources)
    if failed is not None:
        return failed
    try:
        from hcsgraph.memory import stack_slices

        stacks = [_stack_of(s) for s in sources]
        device = _device_id()
        with _stream(*{memory_type_of(s) for s in stacks}, target, device=device):
            host = [convert_to(s, MemoryType.NUMPY) for s in stacks]
            stack = stack_slices([host[i][z] for i, z in picks], target, device)
    except Exception as exc:  # noqa: BLE001
        return _fail(ctx, exc)
    timings: dict[str, float] = {}
    for s in sources:
        for k, v in s.timings.items():
            timings[k] = timings.get(k, 0.0) + v / max(len(sources), 1)
    return StepOutput(stack, {}, timings, [])


def _device_id() -> int | None:
    try:
        from hcsgraph.gpu import current_device
    except ImportError:
        return None
    return current_device()


_STREAM_TYPES = (MemoryType.CUPY, MemoryType.TORCH)


def _stream(*memory_types: MemoryType, device: int | None) -> Any:
    """This thread's CUDA streams for a body touching cupy or torch data (synchronised on exit);
    a no-op, importing nothing, for other memory types."""
    if not any(m in _STREAM_TYPES for m in memory_types):
        return contextlib.nullcontext()
    from hcsgraph.gpu.streams import task_streams

    return task_streams(memory_types, device)


# ---------------------------------------------------------------------------------------------
# steps


def _rebuild(cls: type, payload: bytes) -> Any:
    import cloudpickle

    return cls(**cloudpickle.loads(payload))


class ShippedByValue:
    """Dataclass mixin: pickles its fields with cloudpickle, so user functions defined in a
    pipeline file (a module workers cannot import) travel by value."""

    def __reduce__(self) -> tuple[Any, ...]:
        import dataclasses

        import cloudpickle

        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        return (_rebuild, (type(self), cloudpickle.dumps(fields)))


@dataclass(frozen=True)
class StepCall(ShippedByValue):
    """A resolved step for one group: the chain of functions and what the output must look like."""

    chain: tuple[tuple[Callable[..., Any], dict[str, Any]], ...]
    input_type: MemoryType
    output_type: MemoryType
    expected_slices: int
    special_input_names: tuple[str, ...] = ()
    cpu_chain: tuple[tuple[Callable[..., Any], dict[str, Any]], ...] | None = None
    oom_recovery: bool = True
    scratch_path: str | None = None
    cast_dtype: str | None = None
    storage_options: Any = None


def run_step(ctx: GroupContext, call: StepCall, data: Any, *special_sources: Any) -> Any:
    """Run one step on one group and check the shape contract of what it returns."""
    failed = _first_failure((data, *special_sources))
    if failed is not None:
        return failed
    start = time.perf_counter()
    recoveries: list[tuple[str, str]] = list(getattr(data, "recoveries", ()))
    try:
        stack = _stack_of(data)
        in_shape = tuple(int(n) for n in stack.shape)
        specials_in = {
            name: src.specials[name]
            for name, src in zip(call.special_input_names, special_sources, strict=True)
        }
        specials_out: dict[str, Any] = {}
        device = _device_id()
        for index, (func, kwargs) in enumerate(call.chain):
            cpu_twin = call.cpu_chain[index] if call.cpu_chain else None
            stack, produced, recs = _call_function(
                ctx, func, kwargs, stack, {**specials_in, **specials_out}, cpu_twin, device, call
            )
            specials_out.update(produced)
            recoveries.extend(recs)
        _check_shape(ctx, stack, in_shape, call.expected_slices)
        if call.cast_dtype is not None:
            with _stream(memory_type_of(stack), device=device):
                stack = _cast_exactly(ctx, stack, np.dtype(call.cast_dtype), call.output_type)
        if call.scratch_path is not None:
            with _stream(memory_type_of(stack), device=device):
                host = convert_to(stack, MemoryType.NUMPY)
            file_manager(call.scratch_path, call.storage_options).save_array(np.ascontiguousarray(host), call.scratch_path,
                                     _scratch_backend(call.scratch_path), overwrite=True)
    except Exception as exc:  # noqa: BLE001
        return _fail(ctx, exc)
    timings = dict(data.timings)
    timings[ctx.step] = timings.get(ctx.step, 0.0) + time.perf_counter() - start
    if call.scratch_path is not None:
        return ScratchRef(call.scratch_path, specials_out, timings, tuple(recoveries), call.storage_options)
    return StepOutput(stack, specials_out, timings, recoveries)


def _call_function(
    ctx: GroupContext,
    func: Callable[..., Any],
    kwargs: dict[str, Any],
    stack: Any,
    specials_in: dict[str, Any],
    cpu_twin: tuple[Callable[..., Any], dict[str, Any]] | None,
    device: int | None,
    call: StepCall,
) -> tuple[Any, dict[str, Any], list[tuple[str, str]]]:
    wanted = get_special_inputs(func)
    args = dict(kwargs)
    args.update({name: specials_in[name] for name in wanted})
    in_type = MemoryType(getattr(func, "input_memory_type", MemoryType.NUMPY))
    recoveries: list[tuple[str, str]] = []
    with _stream(memory_type_of(stack), in_type, device=device):  # one stream for conversion and call
        stack = convert_to(stack, in_type, device)
        if in_type is MemoryType.NUMPY or not call.oom_recovery or not getattr(func, "oom_recovery", True):
            result = func(stack, **args)
        else:
            from hcsgraph.gpu.oom import run_with_oom_recovery

            cpu_func = None
            if cpu_twin is not None:
                twin, twin_kwargs = cpu_twin

                def cpu_func(host_stack: Any, **_: Any) -> Any:
                    return twin(convert_to(host_stack, MemoryType.NUMPY), **{**twin_kwargs, **{
                        n: specials_in[n] for n in get_special_inputs(twin)}})

            result, recs = run_with_oom_recovery(
                func,
                stack,
                args,
                step=ctx.step,
                well=ctx.well,
                memory_type=in_type,
                cpu_func=cpu_func,
                splittable=getattr(func, "oom_splittable", True),
                device_id=device,
            )
            recoveries = [(r.kind, r.action) for r in recs]
    declared = get_special_outputs(func)
    produced: dict[str, Any] = {}
    if declared:
        if not isinstance(result, tuple) or len(result) != 1 + len(declared):
            raise StepExecutionError(
                ctx.step,
                ctx.well,
                f"{func.__name__} declares special outputs {list(declared)} and must return "
                f"(image, {', '.join(declared)}); it returned {type(result).__name__}",
                group=ctx.group,
            )
        result, *values = result
        produced = dict(zip(declared, values, strict=True))
    return result, produced, recoveries


def _cast_exactly(ctx: GroupContext, stack: Any, dtype: np.dtype, memory_type: MemoryType) -> Any:
    """The step's declared ``output_dtype``: a cast that loses nothing, or a clear error."""
    host = np.asarray(convert_to(stack, MemoryType.NUMPY))
    if host.dtype == dtype:
        return stack
    if not np.can_cast(host.dtype, dtype, casting="safe"):
        raise StepExecutionError(
            ctx.step, ctx.well,
            f"returned {host.dtype}, which cannot be cast to output_dtype={dtype} without loss",
            group=ctx.group,
        )
    return convert_to(host.astype(dtype), memory_type)


def _check_shape(ctx: GroupContext, stack: Any, in_shape: tuple[int, ...], expected: int) -> None:
    shape = tuple(int(n) for n in getattr(stack, "shape", ()))
    if len(shape) != 3:
        raise StepExecutionError(
            ctx.step, ctx.well, f"returned an array of shape {shape}; steps must return a [Z, Y, X] stack",
            group=ctx.group,
        )
    if shape[0] != expected or shape[1:] != in_shape[1:]:
        raise StepExecutionError(
            ctx.step,
            ctx.well,
            f"returned shape {shape} for an input of shape {in_shape}; expected ({expected}, "
            f"{in_shape[1]}, {in_shape[2]})",
            group=ctx.group,
        )


def extract_special(ctx: GroupContext, data: Any, name: str, planes: tuple[tuple[Any, ...], ...] = ()) -> Any:
    """One special output of a step for one group (small: it travels to the client).

    A list of per-slice records (dicts with ``slice_index``) gets the plate coordinates of each
    slice added (site, channel, z, t), so tables join straight onto the plate index.
    """
    if isinstance(data, Failure):
        return data
    value = data.specials[name]
    if planes and isinstance(value, list) and all(isinstance(v, dict) and "slice_index" in v for v in value):
        value = [
            {"well": ctx.well, **dict(zip(("site", "channel", "z", "t"), planes[v["slice_index"]][1:], strict=True)),
             **v}
            if 0 <= v["slice_index"] < len(planes) else dict(v)
            for v in value
        ]
    return value


@dataclass(frozen=True)
class Materialize(ShippedByValue):
    """A special output's materializer and the base path it writes to."""

    func: Callable[..., str]
    path: str
    guard: RunGuard | None = None
    storage_options: Any = None


def materialize_special(ctx: GroupContext, value: Any, job: Materialize) -> Any:
    """Write a special output through its materializer; returns the path it wrote."""
    if isinstance(value, Failure):
        return value
    try:
        if job.guard is not None:
            job.guard.check()
        return job.func(value, job.path, file_manager(job.path, job.storage_options))
    except Exception as exc:  # noqa: BLE001
        return _fail(ctx, exc)


# ---------------------------------------------------------------------------------------------
# writes


@dataclass(frozen=True)
class PlaneTarget:
    """Where one output plane goes: an OME-Zarr plane (indices 0-based) or a TIFF path."""

    field: int
    t: int
    c: int
    z: int
    tiff_path: str | None = None


@dataclass(frozen=True)
class WriteSpec:
    """How the final stacks of one chunk owner's groups are written.

    ``picks[i] = (source, slice)``: plane ``targets[i]`` is slice ``slice`` of source stack
    ``source`` (the write task's arguments after the spec, in order).
    """

    backend: str  # "zarr" or "disk"
    store: str
    targets: tuple[PlaneTarget, ...]
    dtype: str
    n_levels: int = 1
    picks: tuple[tuple[int, int], ...] = ()
    downsample: str = "mean"
    guard: RunGuard | None = None
    image: str = ""  # a multiscale image inside each field (e.g. "labels/nuclei"), "" for the field's own
    storage_options: Any = None
    label_image: bool = False  # labels are cast by value (int32 → uint16 when they fit), no contrast window


@dataclass(frozen=True)
class WriteReceipt:
    """What a write task wrote, how long each step took, and the value range per channel."""

    planes: int
    timings: dict[str, float]
    recoveries: tuple[tuple[str, str], ...]
    store: str = ""
    windows: tuple[tuple[int, float, float], ...] = ()  # (channel index, min, max)


def write_group(ctx: GroupContext, spec: WriteSpec, *sources: Any) -> WriteReceipt | Failure:
    """Write the final stacks of one chunk owner's groups straight to the output store."""
    failed = _first_failure(sources)
    if failed is not None:
        return failed
    start = time.perf_counter()
    try:
        stacks = [_final_stack(ctx, spec, data) for data in sources]
        picks = spec.picks or tuple((0, i) for i in range(len(spec.targets)))
        planes = [stacks[s][i] for s, i in picks]
        if spec.guard is not None:
            spec.guard.check()
        if spec.backend == "zarr":
            _write_zarr(ctx, spec, stacks, picks)
        else:
            from hcsgraph.io.tiff import write_tiff_atomic

            for target, plane in zip(spec.targets, planes, strict=True):
                write_tiff_atomic(target.tiff_path, plane, storage_options=spec.storage_options)
    except Exception as exc:  # noqa: BLE001
        return _fail(ctx, exc)
    timings: dict[str, float] = {}
    recoveries: list[tuple[str, str]] = []
    for data in sources:
        for step, seconds in data.timings.items():
            timings[step] = timings.get(step, 0.0) + seconds
        recoveries.extend(getattr(data, "recoveries", ()))
    timings["write"] = timings.get("write", 0.0) + time.perf_counter() - start
    return WriteReceipt(len(spec.targets), timings, tuple(recoveries), spec.store, _windows(spec, planes))


def _final_stack(ctx: GroupContext, spec: WriteSpec, data: Any) -> np.ndarray:
    """A source's stack as host numpy of the output dtype (a lossless promotion at most)."""
    stack = np.asarray(convert_to(_stack_of(data), MemoryType.NUMPY))
    dtype = np.dtype(spec.dtype)
    if stack.dtype == dtype:
        return stack
    if np.can_cast(stack.dtype, dtype, casting="safe"):
        return stack.astype(dtype)
    if spec.label_image and stack.dtype.kind in "iub":
        low, high = (int(stack.min()), int(stack.max())) if stack.size else (0, 0)
        info = np.iinfo(dtype)
        if low < info.min or high > info.max:
            raise StepExecutionError(
                ctx.step, ctx.well,
                f"labels {low}..{high} do not fit the label image's {dtype}; set output_dtype= on the labels "
                "step (e.g. 'uint32')",
                group=ctx.group,
            )
        return stack.astype(dtype)
    raise StepExecutionError(
        ctx.step,
        ctx.well,
        f"the final stack is {stack.dtype} but the output was planned as {spec.dtype}; "
        "set output_dtype= on the last step that changes the dtype",
        group=ctx.group,
    )


def _write_zarr(ctx: GroupContext, spec: WriteSpec, stacks: list[np.ndarray],
                picks: tuple[tuple[int, int], ...]) -> None:
    """Every plane of a field in one call, so that a chunk shared by planes is written once."""
    from hcsgraph.io.omezarr import write_planes

    by_field: dict[int, list[int]] = {}
    for i, target in enumerate(spec.targets):
        by_field.setdefault(target.field, []).append(i)
    arrays: dict = {}
    for field_index, items in by_field.items():
        data = _planes_of(stacks, [picks[i] for i in items])
        where = [(spec.targets[i].t, spec.targets[i].c, spec.targets[i].z) for i in items]
        write_planes(spec.store, ctx.well, field_index, where, data, n_levels=spec.n_levels,
                     downsample=spec.downsample, arrays=arrays, image=spec.image,
                     storage_options=spec.storage_options)


def _planes_of(stacks: list[np.ndarray], picks: list[tuple[int, int]]) -> np.ndarray:
    """``[N, Y, X]`` of the picked slices: a view when they are consecutive slices of one stack."""
    source, first = picks[0]
    if all(s == source and i == first + k for k, (s, i) in enumerate(picks)):
        return stacks[source][first:first + len(picks)]
    return np.stack([stacks[s][i] for s, i in picks])


def _windows(spec: WriteSpec, planes: list[np.ndarray]) -> tuple[tuple[int, float, float], ...]:
    """Min and max of what was written, per output channel (for the viewer's contrast window)."""
    if spec.backend != "zarr" or spec.label_image:
        return ()
    ranges: dict[int, tuple[float, float]] = {}
    for target, plane in zip(spec.targets, planes, strict=True):
        if plane.size == 0:
            continue
        lo, hi = float(plane.min()), float(plane.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            finite = plane[np.isfinite(plane)]
            if finite.size == 0:
                continue
            lo, hi = float(finite.min()), float(finite.max())
        old = ranges.get(target.c)
        ranges[target.c] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))
    return tuple((c, lo, hi) for c, (lo, hi) in sorted(ranges.items()))


# ---------------------------------------------------------------------------------------------
# completion


@dataclass
class WellStatus:
    """How one well ended."""

    well: str
    status: str  # "complete", "failed" or "skipped"
    seconds: dict[str, float] = field(default_factory=dict)
    planes: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    specials: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)
    materialized: dict[str, list[str]] = field(default_factory=dict)
    recoveries: list[tuple[str, str]] = field(default_factory=list)
    windows: list[tuple[str, int, float, float]] = field(default_factory=list)


def finalize_well(
    ctx: GroupContext,
    marker_path: str,
    guard: RunGuard | None,
    storage_options: Any,
    receipts: list[Any],
    specials: list[tuple[str, str, Any]],
    materialized: list[tuple[str, Any]],
) -> WellStatus:
    """Mark a well complete once every write of it has landed (an atomic marker file)."""
    status = WellStatus(ctx.well, "complete")
    for item in [*receipts, *(v for _, _, v in specials), *(v for _, v in materialized)]:
        if isinstance(item, Failure):
            status.status = "failed"
            error = {"step": item.step, "group": item.group, "message": item.message, "files": list(item.files)}
            if error not in status.errors:
                status.errors.append(error)
    for receipt in receipts:
        if isinstance(receipt, WriteReceipt):
            status.planes += receipt.planes
            status.recoveries.extend(receipt.recoveries)
            for step, seconds in receipt.timings.items():
                status.seconds[step] = status.seconds.get(step, 0.0) + seconds
            for c, lo, hi in receipt.windows:
                status.windows.append((receipt.store, c, lo, hi))
    for name, group, value in specials:
        if not isinstance(value, Failure):
            status.specials.setdefault(name, []).append((group, value))
    for name, path in materialized:
        if not isinstance(path, Failure):
            status.materialized.setdefault(name, []).append(str(path))
    if status.status == "complete":
        from hcsgraph.io.location import write_json_atomic

        if guard is not None:
            guard.check()
        try:
            write_json_atomic(marker_path, {"well": ctx.well, "status": "complete", "planes": status.planes},
                              storage_options)
        except OSError as exc:
            failure = _fail(ctx, exc)  # raises under on_error="stop"
            status.status = "failed"
            status.errors.append({"step": failure.step, "group": "", "message": failure.message,
                                  "files": list(failure.files)})
    from hcsgraph.dashboard.events import report_well

    report_well(status)  # to the plate page, as a scheduler event (nothing off a distributed worker)
    return status
