"""The ``hcsgraph`` annotation of a compiled run: what the plate page cannot learn from task keys.

Task keys already carry the well (``("<step>-<token>", "B03", ...)``); the annotation adds the
rest, materialised on the scheduler with the graph: on the run key, the run's name, output,
plate format, every well with its planes, and the wells a resumed run skips; on each write
task, the planes it writes (so the page counts planes as they land).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

ANNOTATION = "hcsgraph"
"""Name of the annotation (``ts.annotations["hcsgraph"]`` on the scheduler)."""


def run_annotation(
    tasks: Mapping[Any, Any],
    run_key: str,
    *,
    name: str,
    output: str,
    wells: Iterable[str],
    skipped: Iterable[str] = (),
    plate_format: int | None = None,
) -> dict[Any, dict[str, Any]]:
    """``{key: value}`` for ``__dask_annotations__()["hcsgraph"]`` of a compiled run.

    ``tasks``: the run's final (fused) tasks; ``wells``: every well of the plate, in order;
    ``skipped``: those an earlier run completed. Values are msgpack-safe (they travel to the
    workers with their tasks).
    """
    out: dict[Any, dict[str, Any]] = {}
    per_well: Counter[str] = Counter()
    for key, task in tasks.items():
        planes = planes_written(task)
        if planes and isinstance(key, tuple) and len(key) > 1:
            out[key] = {"planes": planes}
            per_well[str(key[1])] += planes
    kept = [str(w) for w in skipped]
    out[run_key] = {"run": {
        "name": str(name),
        "output": str(output),
        "plate_format": plate_format,
        "wells": [[str(w), per_well.get(str(w), 0)] for w in wells if str(w) not in kept],
        "skipped": kept,
    }}
    return out


def planes_written(task: Any) -> int:
    """Planes a task writes: those of the write specs among its arguments (and its fused links)."""
    spec_type, chain_type = _types()
    total = 0
    for arg in getattr(task, "args", ()):
        if isinstance(arg, spec_type):
            total += len(arg.targets)
        elif isinstance(arg, chain_type):
            total += sum(planes_written(link) for link in arg.tasks)
    return total


@functools.cache
def _types() -> tuple[type, type]:
    from hcsgraph.pipeline.fusion import TaskChain
    from hcsgraph.pipeline.tasks import WriteSpec

    return WriteSpec, TaskChain
