"""Compile a :class:`Pipeline` against a plate into a :class:`PipelineGraph`.

The compile reads as its stages, each a method of :class:`_Compile`:

1. **prepare the output**: refuse an output that overlaps the input plate, take the output's
   lock, check what an earlier run left (overwrite, resume and its fingerprint);
2. **resolve** each step's typed chain per group, check special inputs, plan dtypes and bytes;
3. **emit** load, step, conversion and write tasks, one completion task per well and the run
   task::

    load ─► [to_<type>] ─► step ─► [to_<type>] ─► step ─► [to_numpy] ─► write ─► finalize_well ─► run

4. **fuse** linear runs of a group's tasks into one task.

A conversion task appears only where consecutive memory types differ. Keys carry the step name
and the group: ``("gaussian_filter-<token>", "B03", 1, 1, 1)`` (well, then the values of the
group's fixed components in the order site, channel, z, t). The token is new for every compile,
so a graph compiled again never picks up a result an earlier graph left on a cluster.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
import warnings
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np
from dask.base import tokenize
from dask.task_spec import List, Task, TaskRef

from hcsgraph.config import Backend, GlobalPipelineConfig, MemoryType, OnError, coerce_enum, resolve
from hcsgraph.io import location as loc
from hcsgraph.pipeline import guard
from hcsgraph.pipeline import tasks as T
from hcsgraph.pipeline.contracts import get_special_inputs, get_special_outputs
from hcsgraph.pipeline.errors import PipelineCompileError
from hcsgraph.pipeline.fusion import fuse_linear_chains
from hcsgraph.pipeline.layout import OutputLayout, WriteRequest
from hcsgraph.pipeline.output_state import OutputState, fingerprint
from hcsgraph.pipeline.planes import (
    PlaneId,
    fixed_components,
    group_label,
    group_planes,
    key_name,
    plane_table,
    well_sort_key,
)
from hcsgraph.pipeline.step import FunctionCall, FunctionStep

if TYPE_CHECKING:
    from hcsgraph.pipeline.graph import PipelineGraph
    from hcsgraph.pipeline.step import Pipeline
    from hcsgraph.plate import PlateIndex

GPU_CAPABLE = (MemoryType.CUPY, MemoryType.TORCH, MemoryType.TENSORFLOW, MemoryType.JAX, MemoryType.PYCLESPERANTO)


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
    gpu_typed: bool


@dataclass
class Location:
    """Where a plane lives after a step: the task key holding its stack, and the slice."""

    key: Any
    index: int
    memory_type: MemoryType
    group_size: int


@dataclass
class StepPlan:
    """One step's resolved chains per group and what its output looks like."""

    step: FunctionStep
    name: str
    fixed: tuple[str, ...]
    chains: dict[tuple[Any, ...], ResolvedChain | None]
    dtype: np.dtype = field(default_factory=lambda: np.dtype("uint16"))
    group_dtypes: dict[int, np.dtype] = field(default_factory=dict)  # id(chain) -> dtype before promotion
    labels: bool = False
    allow_cpu_fallback: bool = True


def compile_pipeline(
    pipeline: Pipeline,
    plate: Any,
    output: str | PathLike[str],
    *,
    config: GlobalPipelineConfig | None = None,
    overwrite: bool | None = None,
    resume: bool = False,
    on_error: str | OnError | None = None,
    storage_options: Any = None,
) -> PipelineGraph:
    """See :meth:`Pipeline.compile`."""
    return _Compile(pipeline, plate, output, config, overwrite, resume, on_error, storage_options).build()


class _Compile:
    """The state of one compile; its methods are the stages."""

    def __init__(self, pipeline: Pipeline, plate: Any, output: str | PathLike[str],
                 config: GlobalPipelineConfig | None, overwrite: bool | None, resume: bool,
                 on_error: str | OnError | None, storage_options: Any = None) -> None:
        self.pipeline = pipeline
        self.cfg = resolve(pipeline.config, config, default=GlobalPipelineConfig())
        self.overwrite = bool(resolve(overwrite, self.cfg.overwrite))
        self.resume = bool(resume)
        self.policy = coerce_enum(OnError, resolve(on_error, self.cfg.on_error), "on_error")
        self.index = _as_plate(plate, storage_options)
        if len(self.index.table) == 0:
            raise PipelineCompileError(f"plate {getattr(self.index, 'root', plate)!s} has no images")
        self.planes = plane_table(self.index.table)
        self.run_id = uuid.uuid4().hex
        root, self.options = _output_location(output, storage_options, self.index)
        guard.check_separate(getattr(self.index, "root", None), root)
        self.layout = OutputLayout(root, self.cfg.vfs.materialization_backend, n_levels=self.cfg.zarr.pyramid_levels,
                                   chunk_strategy=self.cfg.zarr.chunk_strategy, options=self.options)
        if self.cfg.vfs.scratch_dir:
            self.layout.scratch_dir = loc.join(loc.absolute(os.fspath(self.cfg.vfs.scratch_dir)),
                                               f"hcsgraph-{self.run_id[:12]}")
        plane_list = "\n".join(f"{p}\t{path}" for p, path in sorted(self.planes.items()))
        self.plate_digest = tokenize(plane_list)
        self.token = tokenize(pipeline.spec(), self.plate_digest, root, repr(self.cfg), self.policy.value,
                              self.run_id)
        self.in_dtype = np.dtype(self.index.dtype)
        self.yx = tuple(int(n) for n in self.index.image_shape)
        self.ctx_base = {"on_error": self.policy}
        self.tasks: dict[Any, Task] = {}
        self.gpu_keys: set[Any] = set()
        self.conversions: dict[tuple[Any, MemoryType], Any] = {}
        self.receipts: dict[str, list[Any]] = defaultdict(list)
        self.specials: dict[str, list[tuple[str, str, Any]]] = defaultdict(list)
        self.materialized: dict[str, list[tuple[str, Any]]] = defaultdict(list)
        self.special_tables: set[str] = set()
        self.partitioned_tables: set[str] = set()
        self.notes: list[str] = []
        self.location: dict[PlaneId, Location] = {}
        self.loaded: dict[PlaneId, Location] = {}
        self.image_source: tuple[dict[PlaneId, Location], np.dtype, bool] | None = None
        self.completed: set[str] = set()

    # -- the whole compile -----------------------------------------------------------------
    def build(self) -> PipelineGraph:
        """Run every stage and return the graph."""
        self.resolve_steps()
        state = OutputState(self.layout, self.pipeline, self.run_id)
        self.guard = state.lock()
        try:
            self.completed = state.prepare(overwrite=self.overwrite, resume=self.resume,
                                           fingerprint=self.fingerprint)
            self.emit_loads()
            self.emit_steps()
            self.request_final_writes()
            self.emit_writes_and_stores(state)
            self.emit_completion()
            self.fuse()
        except BaseException:
            state.abandon()
            raise
        state.commit()
        return self.graph()

    # -- stage 2: resolve ------------------------------------------------------------------
    def resolve_steps(self) -> None:
        """Each step's chain per group, its dtype and kind; checks special inputs; plans bytes."""
        self.gpu_workers = _cluster_gpu_workers()
        names = self.pipeline.step_names
        self.plans = []
        for step, name in zip(self.pipeline.steps, names, strict=True):
            fallback = bool(resolve(step.allow_cpu_fallback, self.cfg.gpu.cpu_fallback))
            fixed = fixed_components(step)
            plan = StepPlan(step, name, fixed, {}, allow_cpu_fallback=fallback)
            plan.chains = self._resolve_groups(plan)
            self.plans.append(plan)
        _check_special_inputs(self.plans)
        self._plan_dtypes()
        self.out_dtype = self.plans[-1].dtype if self.plans else self.in_dtype
        self.fingerprint = fingerprint(self.pipeline.spec(), self.cfg, self.layout.backend.value,
                                       self.plate_digest, len(self.planes), self.out_dtype)
        planned = self._planned_intermediate_bytes()
        self.planned_bytes = planned
        self.scratch_backend = _scratch_backend(self.cfg, planned, bool(self.plans))
        if self.scratch_backend == "zarr" and loc.is_url(self.layout.scratch_root):
            self.scratch_backend = "disk"  # .npy objects through fsspec: the zarr store is local-only

    def _resolve_groups(self, plan: StepPlan) -> dict[tuple[Any, ...], ResolvedChain | None]:
        """Resolve the step's chain for every group it will see (dict steps differ per group)."""
        step = plan.step
        cache: dict[Any, ResolvedChain | None] = {}
        out: dict[tuple[Any, ...], ResolvedChain | None] = {}
        gb_index = plan.fixed.index(step.group_by) if step.group_by in plan.fixed else None
        for gkey in group_planes(self.planes, plan.fixed):
            value = gkey[gb_index] if gb_index is not None else None
            if value not in cache:
                chain = step.chain_for(value)
                cache[value] = None if chain is None else self._resolve_chain(plan, chain)
            out[gkey] = cache[value]
        if all(v is None for v in out.values()):
            keys = ", ".join(repr(k) for k in step.chains)
            raise PipelineCompileError(
                f"step {plan.name!r}: no group of the plate matches the dict keys ({keys}) of {step.group_by!r}"
            )
        return out

    def _resolve_chain(self, plan: StepPlan, chain: tuple[FunctionCall, ...]) -> ResolvedChain:
        calls = []
        cpu_calls: list[tuple[Callable[..., Any], dict[str, Any]]] | None = []
        gpu_typed = False
        special_in: list[str] = []
        special_out: dict[str, Any] = {}
        for call in chain:
            func, twin = self._resolve_callable(plan, call)
            mtype = MemoryType(getattr(func, "input_memory_type", MemoryType.NUMPY))
            if mtype is MemoryType.CUPY and not _gpu_available(self.gpu_workers):
                if twin is None or not plan.allow_cpu_fallback:
                    where = ("the cluster has no GPU workers" if self.gpu_workers is not None
                             else "no CUDA device is available")
                    raise PipelineCompileError(
                        f"step {plan.name!r}: {call.label} is a cupy function, {where}, and it has no CPU version"
                        + ("" if plan.allow_cpu_fallback else " allowed (allow_cpu_fallback=False)")
                    )
                warnings.warn(
                    f"step {plan.name!r}: no GPU for the cupy function {call.label}; running its numpy version",
                    stacklevel=5,
                )
                func, twin = twin, None
                mtype = MemoryType.NUMPY
            gpu_typed = gpu_typed or mtype in GPU_CAPABLE
            kwargs = dict(call.kwargs)
            calls.append((func, kwargs))
            if cpu_calls is not None:
                usable = twin is not None or mtype is MemoryType.NUMPY
                cpu_calls = [*cpu_calls, (twin or func, kwargs)] if usable else None
            for name in get_special_inputs(func):
                if name not in special_out and name not in special_in:
                    special_in.append(name)
            special_out.update(get_special_outputs(func))
        first, last = calls[0][0], calls[-1][0]
        return ResolvedChain(
            calls=tuple(calls),
            cpu_calls=tuple(cpu_calls) if cpu_calls and plan.allow_cpu_fallback else None,
            input_type=MemoryType(getattr(first, "input_memory_type", MemoryType.NUMPY)),
            output_type=MemoryType(getattr(last, "output_memory_type", MemoryType.NUMPY)),
            reduces=any(getattr(f, "reduces_stack", False) for f, _ in calls),
            special_inputs=tuple(special_in),
            special_outputs=special_out,
            gpu_typed=gpu_typed,
        )

    def _resolve_callable(self, plan: StepPlan, call: FunctionCall
                          ) -> tuple[Callable[..., Any], Callable[..., Any] | None]:
        """The callable a FunctionCall names, and its numpy twin (for CPU fallback) where known."""
        from hcsgraph.pipeline import library

        step = plan.step
        if isinstance(call.func, str):
            memory_type = step.memory_type or MemoryType.NUMPY
            if memory_type is MemoryType.CUPY and not _gpu_available(self.gpu_workers):
                if plan.allow_cpu_fallback and MemoryType.NUMPY in library.registry.available_memory_types(call.func):
                    warnings.warn(
                        f"step {plan.name!r}: no GPU for the cupy version of {call.func}; running its numpy version",
                        stacklevel=6,
                    )
                    memory_type = MemoryType.NUMPY
            try:
                func = library.resolve_function(call.func, memory_type)
            except KeyError as exc:
                message = exc.args[0] if exc.args else str(exc)
                raise PipelineCompileError(f"step {plan.name!r}: {message}") from exc
            twin = library.cpu_version(call.func) if memory_type is not MemoryType.NUMPY else None
            return func, twin
        twin = getattr(call.func, "cpu_version", None)
        if twin is None:
            try:
                twin = library.cpu_version(call.func)
            except (KeyError, TypeError):
                twin = None
        return call.func, twin

    def _plan_dtypes(self) -> None:
        """The dtype each step outputs; channels of a dict step that differ are promoted losslessly."""
        current = self.in_dtype
        probes: dict[str, Any] = {}
        for plan in self.plans:
            seen: dict[int, np.dtype] = {}
            labels = False
            for chain in {id(c): c for c in plan.chains.values()}.values():
                d = current
                if chain is not None:
                    for func, kwargs in chain.calls:
                        d = _dtype_after(func, d, kwargs, probes)
                    labels = labels or getattr(chain.calls[-1][0], "image_kind", None) == "labels"
                seen[id(chain)] = d
            plan.group_dtypes = seen
            distinct = set(seen.values())
            if plan.step.output_dtype is not None:
                current = np.dtype(plan.step.output_dtype)
            elif len(distinct) > 1:
                current = _common_dtype(plan.name, distinct)
                self.notes.append(
                    f"step {plan.name!r}: groups return {', '.join(sorted(map(str, distinct)))}; "
                    f"written as {current} (a lossless promotion)"
                )
            else:
                current = distinct.pop()
            plan.dtype = current
            plan.labels = labels or current == np.dtype(bool) or (
                current.kind in "iu" and current != self.in_dtype)

    def _planned_intermediate_bytes(self) -> int:
        """Bytes of every step's output over the whole plate: what worker memory would hold."""
        planned = 0
        plane_px = int(np.prod(self.yx))
        for plan in self.plans:
            reduces = any(c.reduces for c in plan.chains.values() if c is not None)
            count = len(plan.chains) if reduces else len(self.planes)
            planned += count * plane_px * plan.dtype.itemsize
        return planned

    # -- stage 3: emit ---------------------------------------------------------------------
    def _ctx(self, step: str, well: str, label: str, files: tuple[str, ...] = ()) -> T.GroupContext:
        return T.GroupContext(step, well, label, files=files, **self.ctx_base)

    def emit_loads(self) -> None:
        """One load task per group of the first step."""
        load_fixed = self.plans[0].fixed if self.plans else ("well", "site")
        for gkey, members in group_planes(self.planes, load_fixed).items():
            well = gkey[0]
            if well in self.completed:
                continue
            key = (f"load-{self.token}", *gkey)
            paths = tuple(self.planes[p] for p in members)
            ctx = self._ctx("load", well, group_label(load_fixed, gkey), files=paths)
            self.tasks[key] = Task(key, T.load_group, ctx, paths, self.in_dtype.str, self.yx,
                                   getattr(self.index, "storage_options", None))
            for i, p in enumerate(members):
                self.location[p] = Location(key, i, MemoryType.NUMPY, len(members))
        self.loaded = dict(self.location)

    def emit_steps(self) -> None:
        """One task per step and group, with conversions, regroups and special outputs."""
        producers: dict[str, tuple[int, tuple[str, ...]]] = {}
        step_keys: dict[tuple[int, tuple[Any, ...]], Any] = {}
        for s_index, plan in enumerate(self.plans):
            for gkey, members in group_planes(self.location, plan.fixed).items():
                chain = plan.chains.get(gkey)
                if chain is None:
                    continue  # a dict step with no function for this group: the images pass through
                label = group_label(plan.fixed, gkey)
                ctx = self._ctx(plan.name, gkey[0], label)
                source = self._input_for(plan, gkey, members, chain, ctx)
                special_refs = []
                for name in chain.special_inputs:
                    p_index, p_fixed = producers[name]
                    producer_key = step_keys.get((p_index, gkey))
                    if p_fixed != plan.fixed or producer_key is None:
                        raise PipelineCompileError(
                            f"step {plan.name!r}: special input {name!r} comes from step "
                            f"{self.plans[p_index].name!r}, which groups images by {list(p_fixed)}; "
                            f"this step groups them by {list(plan.fixed)}. Use the same variable_components."
                        )
                    special_refs.append(TaskRef(producer_key))
                key = self._emit_step(plan, chain, gkey, members, label, ctx, source, special_refs)
                step_keys[(s_index, gkey)] = key
                for name, materializer in chain.special_outputs.items():
                    producers[name] = (s_index, plan.fixed)
                    self._emit_special(ctx, key, name, materializer, label, tuple(members))

    def _emit_step(self, plan: StepPlan, chain: ResolvedChain, gkey: tuple[Any, ...], members: list[PlaneId],
                   label: str, ctx: T.GroupContext, source: Any, special_refs: list[TaskRef]) -> Any:
        scratch = None
        if self.scratch_backend is not None:
            scratch = self.layout.scratch_path(plan.name, label, self.scratch_backend)
        group_dtype = plan.group_dtypes.get(id(chain), plan.dtype)
        cast = plan.step.output_dtype is not None or group_dtype != plan.dtype
        call = T.StepCall(
            chain=chain.calls,
            input_type=chain.input_type,
            output_type=chain.output_type,
            expected_slices=1 if chain.reduces else len(members),
            special_input_names=chain.special_inputs,
            cpu_chain=chain.cpu_calls,
            oom_recovery=self.cfg.gpu.oom_recovery,
            scratch_path=scratch,
            cast_dtype=str(plan.dtype) if cast else None,
            storage_options=self.options if scratch else None,
        )
        key = (f"{key_name(plan.name)}-{self.token}", *gkey)
        self.tasks[key] = Task(key, T.run_step, ctx, call, TaskRef(source), *special_refs)
        if chain.gpu_typed:
            self.gpu_keys.add(key)
        out_members = members[:1] if chain.reduces else members
        for p in members:
            self.location.pop(p, None)
        out_type = MemoryType.NUMPY if scratch else chain.output_type
        for i, p in enumerate(out_members):
            self.location[p] = Location(key, i, out_type, len(out_members))
        output = plan.step.output
        if output == "image":
            self.image_source = (dict(self.location), plan.dtype, plan.labels)
        elif output is not None:
            name = output.split(":", 1)[1]
            self.layout.labels_layout(name).request(key, out_members, out_type, ctx, self._label_dtype(plan),
                                                   labels=True, name=f"write_labels_{key_name(name)}")
        if plan.step.materialize is not None:
            backend = plan.step.materialize.backend or self.cfg.vfs.materialization_backend
            sub = self.layout.sub_layout(plan.step.materialize.sub_dir, backend)
            sub.request(key, out_members, out_type, ctx, plan.dtype, labels=plan.labels,
                        name=f"write_{key_name(plan.step.materialize.sub_dir)}")
        return key

    def _convert(self, loc_key: Any, source_type: MemoryType, target: MemoryType, ctx: T.GroupContext) -> Any:
        """The key holding ``loc_key``'s stack in ``target`` (a conversion task only if types differ)."""
        if source_type is target:
            return loc_key
        cached = self.conversions.get((loc_key, target))
        if cached is not None:
            return cached
        key = (f"to_{target.value}-{self.token}", *loc_key[1:], str(loc_key[0]).rsplit("-", 1)[0])
        self.tasks[key] = Task(key, T.convert_task, ctx, TaskRef(loc_key), target)
        if target in GPU_CAPABLE or source_type in GPU_CAPABLE:
            self.gpu_keys.add(key)
        self.conversions[(loc_key, target)] = key
        return key

    def _input_for(self, plan: StepPlan, gkey: tuple[Any, ...], members: list[PlaneId], chain: ResolvedChain,
                   ctx: T.GroupContext) -> Any:
        """The key feeding a step's group: the upstream task itself, a conversion, or a regroup."""
        places = [self.location[p] for p in members]
        first = places[0]
        direct = (all(at.key == first.key for at in places) and [at.index for at in places] == list(range(len(places)))
                  and first.group_size == len(places))
        if direct:
            return self._convert(first.key, first.memory_type, chain.input_type, ctx)
        sources: list[Any] = []
        picks = []
        for at in places:
            if at.key not in sources:
                sources.append(at.key)
            picks.append((sources.index(at.key), at.index))
        key = (f"regroup_{key_name(plan.name)}-{self.token}", *gkey)
        self.tasks[key] = Task(key, T.regroup_task, ctx, List(*[TaskRef(k) for k in sources]), tuple(picks),
                               chain.input_type)
        return key

    def _emit_special(self, ctx: T.GroupContext, step_key: Any, name: str, materializer: Any, label: str,
                      planes: tuple[PlaneId, ...]) -> None:
        key = (f"{key_name(name)}-{self.token}", *step_key[1:])
        self.tasks[key] = Task(key, T.extract_special, ctx, TaskRef(step_key), name, planes)
        if getattr(materializer, "partitioned", False):
            # the workers write the table by parts; its rows never travel to the run's last task
            self.partitioned_tables.add(name)
            if hasattr(materializer, "with_metadata"):
                known = dict(getattr(materializer, "metadata", ()))
                defaults = {"plate": getattr(self.index, "name", None), "pipeline": self.pipeline.name,
                            "run_id": self.run_id}
                materializer = materializer.with_metadata(**{k: v for k, v in defaults.items() if k not in known})
        else:
            self.specials[ctx.well].append((name, label, key))
            self.special_tables.add(name)
        if materializer is not None:
            mkey = (f"save_{key_name(name)}-{self.token}", *step_key[1:])
            path = self.layout.special_path(name, label)
            self.tasks[mkey] = Task(mkey, T.materialize_special, ctx, TaskRef(key),
                                    T.Materialize(materializer, path, self.guard, self.options))
            self.materialized[ctx.well].append((name, mkey))

    def _label_dtype(self, plan: StepPlan) -> np.dtype:
        """A label image's dtype: the step's declared unsigned one, or the smallest that any plane's labels fit."""
        from hcsgraph.io.omezarr_labels import smallest_label_dtype

        declared = plan.step.output_dtype
        if declared is not None and np.dtype(declared).kind == "u":
            return np.dtype(declared)
        return smallest_label_dtype(int(np.prod(self.yx)))

    def request_final_writes(self) -> None:
        """Ask the run's layout to write the field images: the ``output="image"`` step's result, else
        the plate's own images when some step writes labels, else where the last step left each plane."""
        if self.image_source is not None:
            source, dtype, labels = self.image_source
        elif self.layout.label_layouts:
            source, dtype, labels = self.loaded, self.in_dtype, False
        else:
            source, dtype = self.location, self.out_dtype
            labels = self.plans[-1].labels if self.plans else False
        self.out_dtype = dtype
        by_key: dict[Any, list[PlaneId]] = defaultdict(list)
        for p, at in sorted(source.items(), key=lambda kv: (str(kv[1].key), kv[1].index)):
            by_key[at.key].append(p)
        for key, members in by_key.items():
            ctx = self._ctx("write", members[0][0], members[0][0])
            self.layout.request(key, members, source[members[0]].memory_type, ctx, dtype, labels=labels,
                                name="write")

    def emit_writes_and_stores(self, state: OutputState) -> None:
        """Write tasks, one per chunk owner's set of groups; the stores' metadata in a thread meanwhile."""
        if not self.layout.inline_zarr:
            loc.makedirs(self.layout.root, self.options)
        layouts = list(self.layout.all_layouts())
        for target in layouts:
            target.plan(self.index)
        with ThreadPoolExecutor(1, thread_name_prefix="hcsgraph-metadata") as metadata_writer:
            stores = metadata_writer.submit(state.create_stores, layouts, self.index, self.cfg, self.resume)
            for target in layouts:
                for n, unit in enumerate(target.write_units()):
                    self._emit_write(target, unit, n)
            stores.result()

    def _emit_write(self, layout: OutputLayout, unit: list[WriteRequest], n: int) -> None:
        """A write task for the groups of one chunk owner (after conversions to numpy where needed)."""
        first = unit[0]
        sources = [self._convert(r.source_key, r.source_type, MemoryType.NUMPY, r.ctx) for r in unit]
        targets = tuple(layout.target(p) for r in unit for p in r.members)
        picks = tuple((i, j) for i, r in enumerate(unit) for j in range(len(r.members)))
        spec = T.WriteSpec(layout.backend.value, layout.image_store, targets, str(first.dtype), layout.n_levels,
                           picks=picks, downsample="nearest" if layout.labels else "mean", guard=self.guard,
                           image=layout.image_path, label_image=layout.label is not None,
                           storage_options=self.options)
        if len(unit) == 1:
            key = (f"{first.name}-{self.token}", *first.source_key[1:])
        else:
            key = (f"{first.name}-{self.token}", first.ctx.well, f"unit{n}")
        self.tasks[key] = Task(key, T.write_group, first.ctx, spec, *[TaskRef(s) for s in sources])
        self.receipts[first.ctx.well].append(key)

    def emit_completion(self) -> None:
        """One finalize task per well, one run task."""
        from hcsgraph.pipeline.graph import RunSpec
        from hcsgraph.pipeline.result import finalize_run

        wells = sorted({p[0] for p in self.planes}, key=well_sort_key)
        well_keys = []
        for well in wells:
            if well in self.completed:
                continue
            key = (f"finalize_well-{self.token}", well)
            self.tasks[key] = Task(
                key,
                T.finalize_well,
                self._ctx("finalize_well", well, ""),
                self.layout.marker_path(well),
                self.guard,
                self.options,
                List(*[TaskRef(k) for k in self.receipts.get(well, [])]),
                List(*[List(name, label, TaskRef(k)) for name, label, k in self.specials.get(well, [])]),
                List(*[List(name, TaskRef(k)) for name, k in self.materialized.get(well, [])]),
            )
            well_keys.append(key)
        self.run_key = f"run_{key_name(self.pipeline.name)}-{self.token}"
        self.spec = RunSpec(
            pipeline=self.pipeline.spec(),
            name=self.pipeline.name,
            config=_config_dict(self.cfg),
            output=self.layout.root,
            image_store=self.layout.image_store,
            backend=self.layout.backend.value,
            wells=tuple(wells),
            skipped=tuple(sorted(self.completed, key=well_sort_key)),
            special_tables=tuple(sorted(self.special_tables - self.partitioned_tables)),
            partitioned_tables=tuple(sorted(self.partitioned_tables)),
            scratch=self.layout.scratch_root if self.scratch_backend else None,
            on_error=self.policy.value,
            run_id=self.run_id,
            guard=self.guard,
            fingerprint=self.fingerprint,
            resume=self.resume,
            notes=tuple(self.notes),
            storage_options=self.options,
        )
        self.tasks[self.run_key] = Task(self.run_key, finalize_run, self.spec,
                                        List(*[TaskRef(k) for k in well_keys]))

    # -- stage 4: fuse ---------------------------------------------------------------------
    def fuse(self) -> None:
        """One task per linear run of a group's tasks (never joining GPU-typed and CPU tasks)."""
        if not self.cfg.fuse_tasks:
            return
        marks = {key: {"GPU": 1.0} for key in self.gpu_keys}
        self.tasks, fused_marks = fuse_linear_chains(self.tasks, marks, keep={self.run_key},
                                                     inner_link=_without_scratch)
        self.gpu_keys = set(fused_marks)

    def graph(self) -> PipelineGraph:
        from hcsgraph.dashboard.annotation import run_annotation
        from hcsgraph.pipeline.graph import PipelineGraph

        # a span per run, inside one named after the pipeline: the output tells two runs apart
        span = {"name": (self.pipeline.name, loc.redact(self.layout.root)),
                "ids": (str(uuid.uuid4()), str(uuid.uuid4()))}
        plate = run_annotation(self.tasks, self.run_key, name=self.pipeline.name, output=loc.redact(self.layout.root),
                               wells=self.spec.wells, skipped=self.spec.skipped)
        return PipelineGraph(
            tasks=self.tasks,
            result_key=self.run_key,
            gpu_keys=frozenset(self.gpu_keys),
            gpu_amount=self.cfg.gpu.gpu_resource,
            span=span,
            spec=self.spec,
            planned_intermediate_bytes=self.planned_bytes,
            scratch_backend=self.scratch_backend,
            plate_annotation=plate,
        )


def _without_scratch(task: Task) -> Task:
    """A step task inside a fused run hands its numpy result straight to the next link: no scratch store."""
    if task.func is not T.run_step:
        return task
    ctx, call, *rest = task.args
    if call.scratch_path is None or call.output_type is not MemoryType.NUMPY:
        return task
    return Task(task.key, T.run_step, ctx, dataclasses.replace(call, scratch_path=None), *rest)


# ---------------------------------------------------------------------------------------------
# helpers of the stages


def _as_plate(plate: Any, storage_options: Any = None) -> PlateIndex:
    from hcsgraph.plate import PlateIndex, open_plate

    if isinstance(plate, PlateIndex):
        return plate
    if storage_options is not None and loc.is_url(plate):
        return open_plate(plate, storage_options=storage_options)
    return open_plate(plate)


def _output_location(output: Any, storage_options: Any, index: Any) -> tuple[str, Any]:
    """The output's absolute path or URL, and its storage options (the plate's on the same protocol)."""
    root, from_url = loc.split_credentials(loc.absolute(os.fspath(output)))
    options = dict(storage_options or {})
    if storage_options is None and loc.is_url(root):
        plate_root = str(getattr(index, "root", ""))
        if loc.is_url(plate_root) and loc.protocol(plate_root) == loc.protocol(root):
            options = dict(getattr(index, "storage_options", None) or {})
    options.update(from_url)
    return root, loc.storage_options(options) if options else None


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


def _check_special_inputs(plans: list[StepPlan]) -> None:
    available: set[str] = set()
    for plan in plans:
        for chain in plan.chains.values():
            if chain is None:
                continue
            missing = [n for n in chain.special_inputs if n not in available]
            if missing:
                raise PipelineCompileError(
                    f"step {plan.name!r} needs special input {missing[0]!r}, which no earlier step produces"
                    + (f" (available: {sorted(available)})" if available else "")
                )
        available |= {name for chain in plan.chains.values() if chain for name in chain.special_outputs}


def _common_dtype(step: str, dtypes: set[np.dtype]) -> np.dtype:
    """The dtype every one of ``dtypes`` casts to without loss, or a compile error saying what to write."""
    common = np.result_type(*dtypes)
    if not all(np.can_cast(d, common, casting="safe") for d in dtypes) or common.kind == "O":
        raise PipelineCompileError(
            f"step {step!r}: its groups return {sorted(map(str, dtypes))}, which share no lossless dtype; "
            "set output_dtype= on the step (e.g. output_dtype='float32')"
        )
    if common.kind == "f" and all(d.kind in "iub" for d in dtypes):
        raise PipelineCompileError(
            f"step {step!r}: its groups return {sorted(map(str, dtypes))}; only a float type holds them all. "
            "Set output_dtype= on the step to say which."
        )
    return common


_PROBE_TYPES = (MemoryType.TORCH, MemoryType.JAX, MemoryType.TENSORFLOW, MemoryType.PYCLESPERANTO)


def _dtype_after(
    func: Callable[..., Any], dtype: np.dtype, kwargs: dict[str, Any], probes: dict[str, Any]
) -> np.dtype:
    """The dtype ``func`` returns for ``dtype`` input: declared (``func.output_dtype``) or probed.

    A function that declares nothing is probed once on a tiny stack of that dtype (with the
    special outputs earlier probes produced), in its own memory type when that runs on the CPU
    (numpy, torch, jax, tensorflow, pyclesperanto); its own special outputs are added to
    ``probes``. cupy functions keep the dtype unless they declare it.
    """
    rule = getattr(func, "output_dtype", None)
    if rule is not None and rule != "same":
        if callable(rule) and not isinstance(rule, type):
            return np.dtype(rule(dtype))
        return np.dtype(rule)
    declared = get_special_outputs(func)
    mtype = MemoryType(getattr(func, "input_memory_type", MemoryType.NUMPY))
    if (rule == "same" and not declared) or (mtype is not MemoryType.NUMPY and mtype not in _PROBE_TYPES):
        return dtype
    needed = get_special_inputs(func)
    if any(name not in probes for name in needed):
        return dtype
    probe = np.zeros((2, 16, 16), dtype=dtype)
    probe[:, 4:12, 4:12] = 1
    try:
        from hcsgraph.memory import convert_to

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = func(convert_to(probe, mtype), **{**kwargs, **{name: probes[name] for name in needed}})
            if declared and isinstance(result, tuple) and len(result) == 1 + len(declared):
                result, *values = result
                probes.update(zip(declared, values, strict=True))
            host = np.asarray(convert_to(result, MemoryType.NUMPY))
    except Exception:  # noqa: BLE001 - the real run reports real errors
        return dtype
    return dtype if rule == "same" else host.dtype


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


def _config_dict(cfg: GlobalPipelineConfig) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return getattr(value, "value", value)

    return plain(cfg)


__all__ = ["compile_pipeline"]
