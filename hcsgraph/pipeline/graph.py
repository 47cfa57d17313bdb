"""`PipelineGraph`: a compiled pipeline as a real Dask collection.

It is built from Task-spec tasks behind a ``dask.Expr``, so ``dask.compute(g)``, ``g.compute()``,
``g.persist()``, ``Client.compute(g)`` and ``g.visualize()`` all work, on any scheduler. The
expression carries the tasks' annotations: a ``distributed.span`` named after the pipeline on
every task, so the dashboard groups the run, and ``resources={"GPU": n}`` on GPU-typed tasks.

GPU placement is decided when the graph is handed to a scheduler, not at compile time: the
annotations are materialised on the scheduler, and GPU-typed tasks ask for the ``GPU`` resource
only when that scheduler has workers that offer it (so compiling before the cluster starts, or
on a CPU-only cluster, never strands a task that no worker can run).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import dask
from dask._expr import Expr
from dask.base import DaskMethodsMixin


@dataclass(frozen=True)
class RunSpec:
    """What the final task needs to write the manifest and assemble the :class:`RunResult`."""

    pipeline: dict[str, Any]
    name: str
    config: dict[str, Any]
    output: str
    image_store: str
    backend: str
    wells: tuple[str, ...]
    skipped: tuple[str, ...]
    special_tables: tuple[str, ...]
    scratch: str | None
    on_error: str
    run_id: str = ""
    guard: Any = None
    fingerprint: dict[str, Any] | None = None
    resume: bool = False
    notes: tuple[str, ...] = ()
    storage_options: Any = None
    partitioned_tables: tuple[str, ...] = ()


class PipelineExpr(Expr):
    """The expression behind a PipelineGraph: a fixed set of tasks and one result key."""

    _parameters = ["tasks", "result_key", "span", "gpu_keys", "gpu_amount", "plate_annotation"]
    _defaults = {"plate_annotation": None}

    @property
    def _name(self) -> str:  # the result key is already unique (it carries the token)
        return self.operand("result_key")

    def __dask_tokenize__(self) -> str:
        return self.operand("result_key")

    def _layer(self) -> dict:
        return dict(self.operand("tasks"))

    def __dask_keys__(self) -> list:
        return [self.operand("result_key")]

    def __dask_annotations__(self) -> dict[str, dict[Any, Any]]:
        span = self.operand("span")
        annotations: dict[str, dict[Any, Any]] = {"span": {key: span for key in self.operand("tasks")}}
        gpu_keys = self.operand("gpu_keys")
        if gpu_keys and scheduler_has_gpu_workers():
            amount = {"GPU": self.operand("gpu_amount")}
            annotations["resources"] = {key: amount for key in gpu_keys}
        plate = self.operand("plate_annotation")
        if plate:  # what the plate page needs (hcsgraph.dashboard.annotation)
            annotations["hcsgraph"] = plate
        return annotations

    def dependencies(self) -> list:
        return []


class PipelineGraph(DaskMethodsMixin):
    """A compiled pipeline; computing it runs the pipeline and returns a :class:`RunResult`."""

    __dask_scheduler__ = staticmethod(dask.threaded.get)
    __dask_optimize__ = None

    def __init__(
        self,
        tasks: dict[Any, Any],
        result_key: str,
        span: dict[str, tuple[str, ...]],
        spec: RunSpec,
        gpu_keys: frozenset[Any] = frozenset(),
        gpu_amount: float = 1.0,
        planned_intermediate_bytes: int = 0,
        scratch_backend: str | None = None,
        plate_annotation: dict[Any, Any] | None = None,
    ) -> None:
        self.expr = PipelineExpr(tasks, result_key, span, frozenset(gpu_keys), gpu_amount, plate_annotation)
        self.plate_annotation = plate_annotation
        self.tasks = tasks
        self.result_key = result_key
        self.gpu_keys = frozenset(gpu_keys)
        """Keys of the tasks that run a GPU-capable memory type (they ask for ``GPU`` where workers offer it)."""
        self.gpu_amount = gpu_amount
        self.span = span
        self.spec = spec
        self.planned_intermediate_bytes = planned_intermediate_bytes
        self.scratch_backend = scratch_backend

    # -- the Dask collection protocol ------------------------------------------------------
    def __dask_graph__(self) -> dict:
        return self.expr.__dask_graph__()

    def __dask_keys__(self) -> list:
        return self.expr.__dask_keys__()

    def __dask_tokenize__(self) -> str:
        return self.result_key

    def __dask_postcompute__(self) -> tuple:
        return _first, ()

    def __dask_postpersist__(self) -> tuple:
        return self._rebuild, ()

    def _rebuild(self, dsk: dict, *args: Any, rename: dict | None = None) -> PipelineGraph:
        return PipelineGraph(dict(dsk), self.result_key, self.span, self.spec,
                             planned_intermediate_bytes=self.planned_intermediate_bytes,
                             scratch_backend=self.scratch_backend, plate_annotation=self.plate_annotation)

    # -- inspection ------------------------------------------------------------------------
    @property
    def output(self) -> str:
        """The output directory."""
        return self.spec.output

    def task_counts(self) -> Counter:
        """Number of tasks per prefix (step name, ``load``, ``to_torch``, ``write``...)."""
        from dask.utils import key_split

        return Counter(key_split(k) for k in self.tasks)

    def links(self, key: Any) -> list[str]:
        """The names of what a task runs: its own, or each link of a fused task, in order."""
        from hcsgraph.pipeline.fusion import links

        return links(self.tasks[key])

    def __len__(self) -> int:
        return len(self.tasks)

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}: {v}" for k, v in self.task_counts().items())
        return f"<PipelineGraph {self.spec.name!r}: {len(self.tasks)} tasks ({counts}) → {self.spec.output}>"


def scheduler_has_gpu_workers() -> bool:
    """Whether the scheduler materialising a graph (in this process) has workers offering ``GPU``.

    Annotations are materialised in the scheduler's process; with no scheduler here (the
    threaded or synchronous scheduler), resources mean nothing and none are asked for.
    """
    try:
        from distributed.scheduler import Scheduler
    except ImportError:
        return False
    for scheduler in list(Scheduler._instances):
        workers = getattr(scheduler, "workers", {}) or {}
        if any(ws.resources.get("GPU", 0) > 0 for ws in list(workers.values())):
            return True
    return False


def _first(results: Any) -> Any:
    return results[0] if isinstance(results, list | tuple) else results
