"""`PipelineGraph`: a compiled pipeline as a real Dask collection.

It is built from Task-spec tasks behind a ``dask.Expr``, so ``dask.compute(g)``, ``g.compute()``,
``g.persist()``, ``Client.compute(g)`` and ``g.visualize()`` all work, on any scheduler. The
expression carries the tasks' annotations: ``resources={"GPU": n}`` on GPU-typed tasks and a
``distributed.span`` named after the pipeline on every task, so the dashboard groups the run.
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


class PipelineExpr(Expr):
    """The expression behind a PipelineGraph: a fixed set of tasks and one result key."""

    _parameters = ["tasks", "result_key", "annotations"]

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
        return self.operand("annotations")

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
        resources: dict[Any, dict[str, float]],
        span: dict[str, tuple[str, ...]],
        spec: RunSpec,
        planned_intermediate_bytes: int = 0,
        scratch_backend: str | None = None,
    ) -> None:
        annotations: dict[str, dict[Any, Any]] = {"span": {key: span for key in tasks}}
        if resources:
            annotations["resources"] = dict(resources)
        self.expr = PipelineExpr(tasks, result_key, annotations)
        self.tasks = tasks
        self.result_key = result_key
        self.resources = resources
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
        return PipelineGraph(dict(dsk), self.result_key, {}, self.span, self.spec,
                             self.planned_intermediate_bytes, self.scratch_backend)

    # -- inspection ------------------------------------------------------------------------
    @property
    def output(self) -> str:
        """The output directory."""
        return self.spec.output

    def task_counts(self) -> Counter:
        """Number of tasks per prefix (step name, ``load``, ``to_torch``, ``write``...)."""
        from dask.utils import key_split

        return Counter(key_split(k) for k in self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}: {v}" for k, v in self.task_counts().items())
        return f"<PipelineGraph {self.spec.name!r}: {len(self.tasks)} tasks ({counts}) → {self.spec.output}>"


def _first(results: Any) -> Any:
    return results[0] if isinstance(results, list | tuple) else results
