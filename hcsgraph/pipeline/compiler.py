"""Compile a :class:`Pipeline` against a plate into a :class:`PipelineGraph`.

The compiler plans, per step, the groups (images that differ only in the step's
``variable_components``), checks every contract it can before anything runs (function names,
special inputs, GPU availability, dtypes, shapes of projections, existing output), writes the
output's metadata once, and emits dask Task-spec tasks::

    load ─► [to_<type>] ─► step ─► [to_<type>] ─► step ─► [to_numpy] ─► write ─► finalize_well ─► run

A conversion task appears only where consecutive memory types differ. Keys carry the step name
and the group: ``("gaussian_filter-<token>", "B03", 1, 1, 1)`` (well, then the values of the
group's fixed components in the order site, channel, z, t).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import uuid
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from operator import itemgetter
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np
from dask.base import tokenize
from dask.task_spec import List, Task, TaskRef

from hcsgraph.config import (
    Backend,
    GlobalPipelineConfig,
    MemoryType,
    OnError,
    coerce_enum,
    resolve,
)
from hcsgraph.pipeline import tasks as T
from hcsgraph.pipeline.contracts import get_special_inputs, get_special_outputs
from hcsgraph.pipeline.errors import OutputExistsError, PipelineCompileError
from hcsgraph.pipeline.fusion import fuse_linear_chains
from hcsgraph.pipeline.layout import OutputLayout, WriteRequest, well_sort_key
from hcsgraph.pipeline.step import COMPONENTS, FunctionCall, FunctionStep

if TYPE_CHECKING:
    from hcsgraph.pipeline.graph import PipelineGraph
    from hcsgraph.pipeline.step import Pipeline
    from hcsgraph.plate import PlateIndex

PlaneId = tuple[str, int, int, int, int]  # well, site, channel, z, t
_CINDEX = {c: i for i, c in enumerate(COMPONENTS)}


@dataclass
class ResolvedChain:
    """A step's functions for one group, resolved to callables, with their memory types."""

    calls: tuple[tuple[Callable[..., Any], dict[str, Any]], ...]
    cpu_calls: tuple[tuple[Callable[..., Any], dict[str, Any]], ...] | None
    input_type: MemoryType
    output_type: MemoryType
    reduces: bool
    special_inputs: tuple[str, ...]
    special_outputs: dict[str, Any]
    needs_gpu: bool


@dataclass
class Location:
    """Where a plane lives after a step: the task key holding its stack, and the slice."""

    key: Any
    index: int
    memory_type: MemoryType
    group_size: int


@dataclass
class GraphBuild:
    """Mutable state while the graph is being built."""

    tasks: dict[Any, Task] = field(default_factory=dict)
    resources: dict[Any, dict[str, float]] = field(default_factory=dict)
    conversions: dict[tuple[Any, MemoryType], Any] = field(default_factory=dict)
    receipts: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    specials: dict[str, list[tuple[str, str, Any]]] = field(default_factory=lambda: defaultdict(list))
    materialized: dict[str, list[tuple[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    special_tables: set[str] = field(default_factory=set)
    planned_bytes: int = 0


def compile_pipeline(
    pipeline: Pipeline,
    plate: Any,
    output: str | PathLike[str],
    *,
    config: GlobalPipelineConfig | None = None,
    overwrite: bool | None = None,
    resume: bool = False,
    on_error: str | OnError | None = None,
) -> PipelineGraph:
    """See :meth:`Pipeline.compile`."""
    from hcsgraph.pipeline.graph import PipelineGraph, RunSpec

    cfg = resolve(pipeline.config, config, default=GlobalPipelineConfig())
    overwrite = bool(resolve(overwrite, cfg.overwrite))
    policy = coerce_enum(OnError, resolve(on_error, cfg.on_error), "on_error")
    index = _as_plate(plate)
    table = index.table
    if len(table) == 0:
        raise PipelineCompileError(f"plate {getattr(index, 'root', plate)!s} has no images")

    layout = OutputLayout(os.path.abspath(os.fspath(output)), cfg.vfs.materialization_backend,
                          n_levels=cfg.zarr.pyramid_levels)
    _check_output(layout, pipeline, overwrite, resume)

    planes = _plane_table(table)
    plane_list = "\n".join(f"{p}\t{path}" for p, path in sorted(planes.items()))
    token = tokenize(pipeline.spec(), plane_list, layout.root, repr(cfg), policy.value)
    gpu_workers = _cluster_gpu_workers()
    in_dtype = np.dtype(index.dtype)
    yx = tuple(int(n) for n in index.image_shape)
    completed = layout.completed_wells() if resume else set()

    build = GraphBuild()
    steps = [_resolve_step(step, planes, gpu_workers) for step in pipeline.steps]
    _check_special_inputs(pipeline.steps, steps)

    # Plan dtypes and intermediate bytes before emitting anything.
    step_dtypes = _plan_dtypes(pipeline.steps, steps, in_dtype)
    build.planned_bytes = _planned_intermediate_bytes(steps, planes, step_dtypes, yx)
    scratch_backend = _scratch_backend(cfg, build.planned_bytes, bool(steps))

    load_fixed = _fixed_components(pipeline.steps[0]) if pipeline.steps else ("well", "site")
    location: dict[PlaneId, Location] = {}
    ctx_base = {"on_error": policy}

    # load
    for gkey, members in _groups(planes, load_fixed).items():
        well = gkey[0]
        if well in completed:
            continue
        key = (f"load-{token}", *gkey)
        paths = tuple(planes[p] for p in members)
        ctx = T.GroupContext("load", well, _group_label(load_fixed, gkey), files=paths, **ctx_base)
        build.tasks[key] = Task(key, T.load_group, ctx, paths)
        for i, p in enumerate(members):
            location[p] = Location(key, i, MemoryType.NUMPY, len(members))

    producers: dict[str, tuple[int, tuple[str, ...]]] = {}
    step_keys: dict[tuple[int, tuple[Any, ...]], Any] = {}
    for s_index, (step, resolved) in enumerate(zip(pipeline.steps, steps, strict=True)):
        fixed = _fixed_components(step)
        step_materialize = step.materialize
        for gkey, members in _groups(location, fixed).items():
            well = gkey[0]
            chain = resolved.get(gkey)
            if chain is None:
                continue  # a dict step with no function for this group: the images pass through
            label = _group_label(fixed, gkey)
            ctx = T.GroupContext(step.name, well, label, **ctx_base)
            source = _input_for(build, token, step, s_index, gkey, members, location, chain, ctx)
            special_refs = []
            for name in chain.special_inputs:
                p_index, p_fixed = producers[name]
                producer_key = step_keys.get((p_index, gkey))
                if p_fixed != fixed or producer_key is None:
                    raise PipelineCompileError(
                        f"step {step.name!r}: special input {name!r} comes from step "
                        f"{pipeline.steps[p_index].name!r}, which groups images by {list(p_fixed)}; "
                        f"this step groups them by {list(fixed)}. Use the same variable_components."
                    )
                special_refs.append(TaskRef(producer_key))
            expected = 1 if chain.reduces else len(members)
            scratch = None
            if scratch_backend is not None:
                scratch = layout.scratch_path(step.name, label, scratch_backend)
            call = T.StepCall(
                chain=chain.calls,
                input_type=chain.input_type,
                output_type=chain.output_type,
                expected_slices=expected,
                special_input_names=chain.special_inputs,
                cpu_chain=chain.cpu_calls if step.allow_cpu_fallback else None,
                oom_recovery=cfg.gpu.oom_recovery,
                scratch_path=scratch,
                cast_dtype=None if step.output_dtype is None else str(step_dtypes[s_index]),
            )
            key = (f"{_key_name(step.name)}-{token}", *gkey)
            build.tasks[key] = Task(key, T.run_step, ctx, call, TaskRef(source), *special_refs)
            if chain.needs_gpu:
                build.resources[key] = {"GPU": cfg.gpu.gpu_resource}
            step_keys[(s_index, gkey)] = key
            out_members = members[:1] if chain.reduces else members
            for p in members:
                location.pop(p, None)
            out_type = MemoryType.NUMPY if scratch else chain.output_type
            for i, p in enumerate(out_members):
                location[p] = Location(key, i, out_type, len(out_members))
            for name, materializer in chain.special_outputs.items():
                producers[name] = (s_index, fixed)
                _emit_special(build, layout, token, ctx, key, name, materializer, label, tuple(members))
            if step_materialize is not None:
                backend = step_materialize.backend or cfg.vfs.materialization_backend
                sub = layout.sub_layout(step_materialize.sub_dir, backend)
                sub.request(key, out_members, out_type, ctx, step_dtypes[s_index],
                            name=f"write_{_key_name(step_materialize.sub_dir)}")

    out_dtype = step_dtypes[-1] if steps else in_dtype
    # Final writes: one per task that holds final planes.
    by_key: dict[Any, list[PlaneId]] = defaultdict(list)
    for p, loc in sorted(location.items(), key=lambda kv: (str(kv[1].key), kv[1].index)):
        by_key[loc.key].append(p)
    for key, members in by_key.items():
        ctx = T.GroupContext("write", members[0][0], _group_label(("well",), (members[0][0],)), **ctx_base)
        layout.request(key, members, location[members[0]].memory_type, ctx, out_dtype, name="write")

    # The output stores' metadata is written once, here on the client, before anything runs: in
    # a thread, so that its file-system calls overlap with building the rest of the graph.
    os.makedirs(layout.root, exist_ok=True)
    target_layouts = list(layout.all_layouts())
    for target_layout in target_layouts:
        target_layout.plan(index)
    with ThreadPoolExecutor(1, thread_name_prefix="hcsgraph-metadata") as metadata_writer:
        stores = metadata_writer.submit(_create_stores, target_layouts, index, cfg, resume)
        for target_layout in target_layouts:
            for request in target_layout.requests:
                _emit_write(build, token, target_layout, request)

        # Completion: one finalize task per well, one run task.
        wells = sorted({p[0] for p in planes}, key=well_sort_key)
        well_keys = []
        for well in wells:
            if well in completed:
                continue
            key = (f"finalize_well-{token}", well)
            ctx = T.GroupContext("finalize_well", well, "", **ctx_base)
            build.tasks[key] = Task(
                key,
                T.finalize_well,
                ctx,
                layout.marker_path(well),
                List(*[TaskRef(k) for k in build.receipts.get(well, [])]),
                List(*[List(name, label, TaskRef(k)) for name, label, k in build.specials.get(well, [])]),
                List(*[List(name, TaskRef(k)) for name, k in build.materialized.get(well, [])]),
            )
            well_keys.append(key)

        run_key = f"run_{_key_name(pipeline.name)}-{token}"
        spec = RunSpec(
            pipeline=pipeline.spec(),
            name=pipeline.name,
            config=_config_dict(cfg),
            output=layout.root,
            image_store=layout.image_store,
            backend=layout.backend.value,
            wells=tuple(wells),
            skipped=tuple(sorted(completed, key=well_sort_key)),
            special_tables=tuple(sorted(build.special_tables)),
            scratch=layout.scratch_root if scratch_backend else None,
            on_error=policy.value,
        )
        from hcsgraph.pipeline.result import finalize_run

        build.tasks[run_key] = Task(run_key, finalize_run, spec, List(*[TaskRef(k) for k in well_keys]))
        if cfg.fuse_tasks:
            build.tasks, build.resources = fuse_linear_chains(build.tasks, build.resources, keep={run_key},
                                                              inner_link=_without_scratch)
        stores.result()
    span = {"name": (pipeline.name,), "ids": (str(uuid.uuid4()),)}
    return PipelineGraph(
        tasks=build.tasks,
        result_key=run_key,
        resources=build.resources,
        span=span,
        spec=spec,
        planned_intermediate_bytes=build.planned_bytes,
        scratch_backend=scratch_backend,
    )


def _create_stores(layouts: list[OutputLayout], index: Any, cfg: GlobalPipelineConfig, resume: bool) -> None:
    for target_layout in layouts:
        target_layout.create_store(index, cfg, resume=resume)


def _without_scratch(task: Task) -> Task:
    """A step task inside a fused run hands its numpy result straight to the next link: no scratch store."""
    if task.func is not T.run_step:
        return task
    ctx, call, *rest = task.args
    if call.scratch_path is None or call.output_type is not MemoryType.NUMPY:
        return task
    return Task(task.key, T.run_step, ctx, dataclasses.replace(call, scratch_path=None), *rest)


# ---------------------------------------------------------------------------------------------
# planning helpers


def _as_plate(plate: Any) -> PlateIndex:
    from hcsgraph.plate import PlateIndex, open_plate

    if isinstance(plate, PlateIndex):
        return plate

    return open_plate(plate)


def _plane_table(table: Any) -> dict[PlaneId, str]:
    planes: dict[PlaneId, str] = {}
    for well, site, channel, z, t, path in zip(
        table["well"], table["site"], table["channel"], table["z"], table["t"], table["path"], strict=True
    ):
        planes[(str(well), int(site), int(channel), int(z), int(t))] = str(path)
    return planes


def _fixed_components(step: FunctionStep) -> tuple[str, ...]:
    return tuple(c for c in COMPONENTS if c not in step.variable_components)


def _groups(planes: Iterable[PlaneId], fixed: tuple[str, ...]) -> dict[tuple[Any, ...], list[PlaneId]]:
    """Planes grouped by the fixed components, each group in natural order of the others."""
    idx = [_CINDEX[c] for c in fixed]
    group_of = itemgetter(*idx) if len(idx) > 1 else (lambda p, i=idx[0]: (p[i],))
    out: dict[tuple[Any, ...], list[PlaneId]] = defaultdict(list)
    for p in planes:
        out[group_of(p)].append(p)
    ordered = sorted(out, key=lambda g: (well_sort_key(g[0]), *g[1:]))
    return {g: sorted(out[g], key=lambda p: p[1:]) for g in ordered}


def _group_label(fixed: tuple[str, ...], gkey: tuple[Any, ...]) -> str:
    return "_".join([str(gkey[0]), *(f"{c}{v}" for c, v in zip(fixed[1:], gkey[1:], strict=True))])


@functools.lru_cache(maxsize=1024)
def _key_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "_+|." else "_" for ch in name) or "step"


def _cluster_gpu_workers() -> int | None:
    """GPU workers of the current distributed client; None when there is no client."""
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        return None
    try:
        from hcsgraph.gpu import cluster_gpu_count

        return int(cluster_gpu_count(client))
    except Exception:  # noqa: BLE001 - an unreachable scheduler shows up at compute time
        return None


def _cuda_available() -> bool:
    try:
        import cupy
    except ImportError:
        return False
    try:
        return bool(cupy.cuda.is_available())
    except Exception:  # noqa: BLE001 - cupy without a driver
        return False


def _gpu_available(gpu_workers: int | None) -> bool:
    """GPU workers on the connected cluster or, with no client, a CUDA device here."""
    return gpu_workers > 0 if gpu_workers is not None else _cuda_available()


def _resolve_callable(
    step: FunctionStep, call: FunctionCall, gpu_workers: int | None
) -> tuple[Callable[..., Any], Callable[..., Any] | None]:
    """The callable a FunctionCall names, and its numpy twin (for CPU fallback) where known."""
    from hcsgraph.pipeline import library

    if isinstance(call.func, str):
        memory_type = step.memory_type or MemoryType.NUMPY
        if memory_type is MemoryType.CUPY and not _gpu_available(gpu_workers):
            if step.allow_cpu_fallback and MemoryType.NUMPY in library.registry.available_memory_types(call.func):
                warnings.warn(
                    f"step {step.name!r}: no GPU for the cupy version of {call.func}; running its numpy version",
                    stacklevel=5,
                )
                memory_type = MemoryType.NUMPY
        try:
            func = library.resolve_function(call.func, memory_type)
        except KeyError as exc:
            message = exc.args[0] if exc.args else str(exc)
            raise PipelineCompileError(f"step {step.name!r}: {message}") from exc
        twin = library.cpu_version(call.func) if memory_type is not MemoryType.NUMPY else None
        return func, twin
    twin = getattr(call.func, "cpu_version", None)
    if twin is None:
        try:
            twin = library.cpu_version(call.func)
        except (KeyError, TypeError):
            twin = None
    return call.func, twin


def _resolve_step(
    step: FunctionStep, planes: dict[PlaneId, str], gpu_workers: int | None
) -> dict[tuple[Any, ...], ResolvedChain | None]:
    """Resolve the step's chain for every group it will see (dict steps differ per group)."""
    fixed = _fixed_components(step)
    cache: dict[Any, ResolvedChain | None] = {}
    out: dict[tuple[Any, ...], ResolvedChain | None] = {}
    gb_index = fixed.index(step.group_by) if step.group_by in fixed else None
    for gkey in _groups(planes, fixed):
        value = gkey[gb_index] if gb_index is not None else None
        if value not in cache:
            chain = step.chain_for(value)
            cache[value] = None if chain is None else _resolve_chain(step, chain, gpu_workers)
        out[gkey] = cache[value]
    if all(v is None for v in out.values()):
        keys = ", ".join(repr(k) for k in step.chains)
        raise PipelineCompileError(
            f"step {step.name!r}: no group of the plate matches the dict keys ({keys}) of {step.group_by!r}"
        )
    return out


def _resolve_chain(step: FunctionStep, chain: tuple[FunctionCall, ...], gpu_workers: int | None) -> ResolvedChain:
    calls = []
    cpu_calls: list[tuple[Callable[..., Any], dict[str, Any]]] | None = []
    needs_gpu = False
    special_in: list[str] = []
    special_out: dict[str, Any] = {}
    for call in chain:
        func, twin = _resolve_callable(step, call, gpu_workers)
        mtype = MemoryType(getattr(func, "input_memory_type", MemoryType.NUMPY))
        if mtype is MemoryType.CUPY:
            if not _gpu_available(gpu_workers):
                if twin is None or not step.allow_cpu_fallback:
                    where = "the cluster has no GPU workers" if gpu_workers is not None else "no CUDA device is available"
                    raise PipelineCompileError(
                        f"step {step.name!r}: {call.label} is a cupy function, {where}, and it has no CPU version"
                        + ("" if step.allow_cpu_fallback else " allowed (allow_cpu_fallback=False)")
                    )
                warnings.warn(
                    f"step {step.name!r}: no GPU for the cupy function {call.label}; running its numpy version",
                    stacklevel=4,
                )
                func, twin = twin, None
                mtype = MemoryType.NUMPY
            else:
                needs_gpu = True
        elif mtype is not MemoryType.NUMPY and gpu_workers:
            needs_gpu = True
        kwargs = dict(call.kwargs)
        calls.append((func, kwargs))
        if cpu_calls is not None:
            cpu_calls = None if (twin is None and mtype is not MemoryType.NUMPY) else [*cpu_calls, (twin or func, kwargs)]
        for name in get_special_inputs(func):
            if name not in special_out and name not in special_in:
                special_in.append(name)
        special_out.update(get_special_outputs(func))
    first, last = calls[0][0], calls[-1][0]
    return ResolvedChain(
        calls=tuple(calls),
        cpu_calls=tuple(cpu_calls) if cpu_calls else None,
        input_type=MemoryType(getattr(first, "input_memory_type", MemoryType.NUMPY)),
        output_type=MemoryType(getattr(last, "output_memory_type", MemoryType.NUMPY)),
        reduces=any(getattr(f, "reduces_stack", False) for f, _ in calls),
        special_inputs=tuple(special_in),
        special_outputs=special_out,
        needs_gpu=needs_gpu,
    )


def _step_specials(resolved: dict[tuple[Any, ...], ResolvedChain | None]) -> set[str]:
    return {name for chain in resolved.values() if chain for name in chain.special_outputs}


def _check_special_inputs(steps: list[FunctionStep], resolved: list[dict[Any, ResolvedChain | None]]) -> None:
    available: set[str] = set()
    for step, groups in zip(steps, resolved, strict=True):
        for chain in groups.values():
            if chain is None:
                continue
            missing = [n for n in chain.special_inputs if n not in available]
            if missing:
                raise PipelineCompileError(
                    f"step {step.name!r} needs special input {missing[0]!r}, which no earlier step produces"
                    + (f" (available: {sorted(available)})" if available else "")
                )
        available |= _step_specials(groups)


def _dtype_after(
    func: Callable[..., Any], dtype: np.dtype, kwargs: dict[str, Any], probes: dict[str, Any]
) -> np.dtype:
    """The dtype ``func`` returns for ``dtype`` input: declared (``func.output_dtype``) or probed.

    A numpy function that declares nothing is probed once on a tiny stack of that dtype (with
    the special outputs earlier probes produced); its own special outputs are added to
    ``probes``. Other memory types are assumed to keep the dtype unless they declare it.
    """
    rule = getattr(func, "output_dtype", None)
    if rule is not None and rule != "same":
        if callable(rule) and not isinstance(rule, type):
            return np.dtype(rule(dtype))
        return np.dtype(rule)
    declared = get_special_outputs(func)
    numpy_typed = MemoryType(getattr(func, "input_memory_type", MemoryType.NUMPY)) is MemoryType.NUMPY
    if (rule == "same" and not declared) or not numpy_typed:
        return dtype
    needed = get_special_inputs(func)
    if any(name not in probes for name in needed):
        return dtype
    probe = np.zeros((2, 16, 16), dtype=dtype)
    probe[:, 4:12, 4:12] = 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = func(probe, **{**kwargs, **{name: probes[name] for name in needed}})
    except Exception:  # noqa: BLE001 - the real run reports real errors
        return dtype
    if declared and isinstance(result, tuple) and len(result) == 1 + len(declared):
        result, *values = result
        probes.update(zip(declared, values, strict=True))
    return dtype if rule == "same" else np.dtype(getattr(result, "dtype", dtype))


def _plan_dtypes(
    steps: list[FunctionStep], resolved: list[dict[Any, ResolvedChain | None]], in_dtype: np.dtype
) -> list[np.dtype]:
    """The dtype each step outputs (one per step: dict steps must agree)."""
    out = []
    current = in_dtype
    probes: dict[str, Any] = {}
    for step, groups in zip(steps, resolved, strict=True):
        seen = set()
        chains = {id(c): c for c in groups.values()}
        for chain in chains.values():
            d = current
            if chain is not None:
                for func, kwargs in chain.calls:
                    d = _dtype_after(func, d, kwargs, probes)
            seen.add(d)
        if step.output_dtype is not None:
            current = np.dtype(step.output_dtype)
        elif len(seen) > 1:
            raise PipelineCompileError(
                f"step {step.name!r}: its functions return different dtypes {sorted(map(str, seen))}; "
                "set output_dtype= on the step"
            )
        else:
            current = seen.pop()
        out.append(current)
    return out


def _planned_intermediate_bytes(
    resolved: list[dict[Any, ResolvedChain | None]],
    planes: dict[PlaneId, str],
    dtypes: list[np.dtype],
    yx: tuple[int, ...],
) -> int:
    """Bytes of every step's output over the whole plate: what worker memory would hold."""
    planned = 0
    plane_px = int(np.prod(yx))
    for groups, dtype in zip(resolved, dtypes, strict=True):
        reduces = any(c.reduces for c in groups.values() if c is not None)
        count = len(groups) if reduces else len(planes)
        planned += count * plane_px * dtype.itemsize
    return planned


def _scratch_backend(cfg: GlobalPipelineConfig, planned: int, has_steps: bool) -> str | None:
    """"zarr"/"disk" when intermediates go through a scratch store instead of worker memory."""
    if not has_steps:
        return None
    if cfg.vfs.intermediate_backend is Backend.ZARR:
        return "zarr"
    if cfg.vfs.intermediate_backend is Backend.DISK:
        return "disk"
    limit = cfg.vfs.memory_limit_bytes
    return "zarr" if limit is not None and planned > limit else None


# ---------------------------------------------------------------------------------------------
# emitting tasks


def _convert(build: GraphBuild, token: str, loc_key: Any, source_type: MemoryType, target: MemoryType,
             ctx: T.GroupContext) -> Any:
    """The key holding ``loc_key``'s stack in ``target`` (a conversion task only if types differ)."""
    if source_type is target:
        return loc_key
    cached = build.conversions.get((loc_key, target))
    if cached is not None:
        return cached
    tail = loc_key[1:] if isinstance(loc_key, tuple) else (loc_key,)
    key = (f"to_{target.value}-{token}", *tail, str(loc_key[0]).rsplit("-", 1)[0]) if isinstance(loc_key, tuple) \
        else f"to_{target.value}-{token}-{loc_key}"
    build.tasks[key] = Task(key, T.convert_task, ctx, TaskRef(loc_key), target)
    if target is MemoryType.CUPY or source_type is MemoryType.CUPY:
        build.resources[key] = {"GPU": 1.0}
    build.conversions[(loc_key, target)] = key
    return key


def _input_for(
    build: GraphBuild,
    token: str,
    step: FunctionStep,
    s_index: int,
    gkey: tuple[Any, ...],
    members: list[PlaneId],
    location: dict[PlaneId, Location],
    chain: ResolvedChain,
    ctx: T.GroupContext,
) -> Any:
    """The key feeding a step's group: the upstream task itself, a conversion, or a regroup."""
    locs = [location[p] for p in members]
    first = locs[0]
    direct = all(loc.key == first.key for loc in locs) and [loc.index for loc in locs] == list(
        range(len(locs))
    ) and first.group_size == len(locs)
    if direct:
        return _convert(build, token, first.key, first.memory_type, chain.input_type, ctx)
    sources: list[Any] = []
    picks = []
    for loc in locs:
        if loc.key not in sources:
            sources.append(loc.key)
        picks.append((sources.index(loc.key), loc.index))
    key = (f"regroup_{_key_name(step.name)}-{token}", *gkey)
    build.tasks[key] = Task(
        key, T.regroup_task, ctx, List(*[TaskRef(k) for k in sources]), tuple(picks), chain.input_type
    )
    return key


def _emit_special(build: GraphBuild, layout: OutputLayout, token: str, ctx: T.GroupContext, step_key: Any,
                  name: str, materializer: Any, label: str, planes: tuple[PlaneId, ...]) -> None:
    key = (f"{_key_name(name)}-{token}", *step_key[1:])
    build.tasks[key] = Task(key, T.extract_special, ctx, TaskRef(step_key), name, planes)
    build.specials[ctx.well].append((name, label, key))
    build.special_tables.add(name)
    if materializer is not None:
        mkey = (f"save_{_key_name(name)}-{token}", *step_key[1:])
        path = layout.special_path(name, label)
        build.tasks[mkey] = Task(mkey, T.materialize_special, ctx, TaskRef(key), T.Materialize(materializer, path))
        build.materialized[ctx.well].append((name, mkey))


def _emit_write(build: GraphBuild, token: str, layout: OutputLayout, request: WriteRequest) -> None:
    """A write task for one group's final stack (after a conversion to numpy if needed)."""
    data_key = _convert(build, token, request.source_key, request.source_type, MemoryType.NUMPY, request.ctx)
    targets = tuple(layout.target(p) for p in request.members)
    spec = T.WriteSpec(layout.backend.value, layout.image_store, targets, str(request.dtype), layout.n_levels)
    tail = request.source_key[1:] if isinstance(request.source_key, tuple) else (request.source_key,)
    key = (f"{request.name}-{token}", *tail)
    build.tasks[key] = Task(key, T.write_group, request.ctx, spec, TaskRef(data_key))
    build.receipts[request.ctx.well].append(key)


def _check_output(layout: OutputLayout, pipeline: Pipeline, overwrite: bool, resume: bool) -> None:
    existing = layout.existing_artifacts(pipeline)
    if existing and not overwrite and not resume:
        raise OutputExistsError(
            f"output {layout.root} already holds results ({', '.join(existing[:3])}); "
            "pass overwrite=True to replace them or resume=True to finish the missing wells"
        )
    if existing and overwrite and not resume:
        layout.remove_artifacts(pipeline)


def _config_dict(cfg: GlobalPipelineConfig) -> dict[str, Any]:
    import dataclasses

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return getattr(value, "value", value)

    return plain(cfg)


__all__ = ["compile_pipeline"]
