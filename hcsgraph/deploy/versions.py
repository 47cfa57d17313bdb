"""Check at connect time that a cluster's workers can run a pipeline sent from this client.

Client and workers must run the same hcsgraph version, the same Python minor version (pipeline
functions travel pickled by value, and code objects differ between minor versions) and the same
dask / distributed release (hcsgraph builds on dask's private expression API); and every worker
that may receive a step must have the array library of its memory type. :func:`check_cluster`
asks every worker once (``client.run``, before any task is submitted) and raises one
:class:`ClusterMismatchError` that names each worker and package that differ.

The probe sent to the workers uses the standard library only, so it also reports a worker on
which hcsgraph is not installed at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hcsgraph.config import MemoryType
from hcsgraph.memory.libraries import CLE_PACKAGES, LIBRARIES

__all__ = [
    "MATCHED_PACKAGES",
    "ClusterMismatchError",
    "Mismatch",
    "check_cluster",
    "compare_reports",
    "local_report",
    "pipeline_memory_types",
    "required_modules",
]

MATCHED_PACKAGES: dict[str, str] = {"hcsgraph": "exact", "dask": "minor", "distributed": "minor"}
"""Distributions whose versions must agree: exactly, or in their first two parts (``2026.8``)."""

@dataclass(frozen=True)
class Mismatch:
    """One difference between the client and a worker: ``detail`` says what, ``hint`` what to do."""

    worker: str
    package: str
    detail: str
    hint: str

    def __str__(self) -> str:
        return f"worker {self.worker}: {self.detail}; {self.hint}"


class ClusterMismatchError(RuntimeError):
    """Some workers differ from the client in a way that would fail the run; raised before any task runs."""

    def __init__(self, mismatches: Iterable[Mismatch]) -> None:
        self.mismatches = list(mismatches)
        first, rest = self.mismatches[0], self.mismatches[1:]
        text = f"worker {first.worker} cannot run this pipeline: {first.detail}; {first.hint}"
        if rest:
            text += " (also " + "; ".join(str(m) for m in rest[:3])
            text += f"; and {len(rest) - 3} more)" if len(rest) > 3 else ")"
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.mismatches,))


def _probe(modules: tuple[str, ...], distributions: tuple[str, ...]) -> dict[str, Any]:
    """What a worker has: Python version, distribution versions, importable modules (stdlib only)."""
    import importlib.metadata
    import importlib.util
    import sys

    versions: dict[str, str | None] = {}
    for name in distributions:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    found: dict[str, bool] = {}
    for name in modules:
        try:
            found[name] = sys.modules.get(name) is not None or importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found[name] = False
    return {"python": ".".join(map(str, sys.version_info[:3])), "versions": versions, "modules": found}


def _portable(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` rebuilt under a name no module holds, so that it is pickled by value (no hcsgraph import needed)."""
    import types

    clone = types.FunctionType(func.__code__, {"__builtins__": __builtins__}, "hcsgraph_probe")
    clone.__qualname__ = "hcsgraph_probe.<locals>.probe"
    return clone


def local_report(modules: Iterable[str] = ()) -> dict[str, Any]:
    """This process's answer to the probe the workers run."""
    return _probe(tuple(modules), tuple(MATCHED_PACKAGES))


def required_modules(memory_types: Iterable[MemoryType | str]) -> dict[MemoryType, tuple[str, ...]]:
    """For each memory type (numpy always included), the modules of which one must be importable."""
    types_ = {MemoryType(t) for t in memory_types} | {MemoryType.NUMPY}
    return {t: CLE_PACKAGES if t is MemoryType.PYCLESPERANTO else (LIBRARIES[t].import_name,)
            for t in sorted(types_, key=lambda t: t.value)}


def pipeline_memory_types(pipeline: Any) -> set[MemoryType]:
    """The memory types a Pipeline's steps run in: each step's ``memory_type`` and its callables' decorators."""
    found = {MemoryType.NUMPY}
    for step in getattr(pipeline, "steps", []):
        for chain in step.chains.values():
            for call in chain:
                func = call.func
                if isinstance(func, str):
                    found.add(step.memory_type or MemoryType.NUMPY)
                    continue
                for attr in ("input_memory_type", "output_memory_type"):
                    value = getattr(func, attr, None)
                    if value is not None:
                        found.add(MemoryType(value))
    return found


def _version_key(version: str, how: str) -> str:
    return version if how == "exact" else ".".join(version.split(".")[:2])


def compare_reports(client: Mapping[str, Any], workers: Mapping[str, Any],
                    needs: Mapping[MemoryType, tuple[str, ...]],
                    gpu_workers: Iterable[str] = ()) -> list[Mismatch]:
    """The mismatches between the client's report and each worker's (an exception counts as a worker's report).

    ``needs``: modules per memory type (:func:`required_modules`). ``gpu_workers``: the workers
    offering ``GPU``; when there are any, GPU-typed memory types are needed only on them.
    """
    from hcsgraph.pipeline.compiler import GPU_CAPABLE  # types whose tasks go to GPU workers when any exist

    gpu_workers = set(gpu_workers)
    mismatches: list[Mismatch] = []
    for worker, report in sorted(workers.items()):
        if isinstance(report, BaseException):
            mismatches.append(Mismatch(worker, "python", f"the version probe failed there ({type(report).__name__}: "
                                       f"{report})", "check the worker's Python environment"))
            continue
        mismatches.extend(_compare_one(worker, client, report, needs, gpu_workers, frozenset(GPU_CAPABLE)))
    return mismatches


def _compare_one(worker: str, client: Mapping[str, Any], report: Mapping[str, Any],
                 needs: Mapping[MemoryType, tuple[str, ...]], gpu_workers: set[str],
                 gpu_types: frozenset[MemoryType]) -> list[Mismatch]:
    out: list[Mismatch] = []
    for name, how in MATCHED_PACKAGES.items():
        want, got = client["versions"].get(name), report["versions"].get(name)
        if want is None:
            continue
        if got is None:
            out.append(Mismatch(worker, name, f"{name} is not installed there ({want} on the client)",
                                f"install {name}=={want} on the workers"))
        elif _version_key(want, how) != _version_key(got, how):
            level = "version" if how == "exact" else f"{_version_key(want, how)} release"
            out.append(Mismatch(worker, name, f"{name} {got} there, {want} on the client",
                                f"client and workers need the same {name} {level}: install {name}=={want} on the "
                                "workers (or rebuild their image from the client's checkout)"))
    mine, theirs = client["python"], report["python"]
    if _version_key(mine, "minor") != _version_key(theirs, "minor"):
        out.append(Mismatch(worker, "Python", f"Python {theirs} there, {mine} on the client",
                            "pipeline functions travel pickled and need the same Python minor version on client "
                            f"and workers (e.g. build the image FROM python:{_version_key(mine, 'minor')}-slim)"))
    for memory_type, modules in needs.items():
        if memory_type in gpu_types and gpu_workers and worker not in gpu_workers:
            continue  # its tasks go to the GPU workers only
        if memory_type is MemoryType.CUPY and not gpu_workers:
            continue  # no GPU worker: compile runs the numpy versions (or refuses)
        if not any(report["modules"].get(m) for m in modules):
            hint = "pip install numpy" if memory_type is MemoryType.NUMPY else LIBRARIES[memory_type].install_hint
            out.append(Mismatch(worker, modules[0], f"{' or '.join(modules)} is not installed there",
                                f"the pipeline's {memory_type.value} steps need it: {hint} on the workers"))
    return out


def check_cluster(client: Any, memory_types: Iterable[MemoryType | str] = ()) -> dict[str, Any]:
    """Raise :class:`ClusterMismatchError` unless every worker matches the client (see the module's docstring).

    ``memory_types``: those the pipeline runs in (:func:`pipeline_memory_types`); numpy is always
    needed. Returns the workers' reports, keyed by address. Submits no task.
    """
    needs = required_modules(memory_types)
    modules = tuple(m for alternatives in needs.values() for m in alternatives)
    reports = client.run(_portable(_probe), modules, tuple(MATCHED_PACKAGES), on_error="return")
    info = client.scheduler_info(n_workers=-1)["workers"]
    labels = {addr: _label(addr, info.get(addr, {})) for addr in reports}
    gpu = {labels[addr] for addr in reports if (info.get(addr, {}).get("resources") or {}).get("GPU", 0) > 0}
    mismatches = compare_reports(local_report(modules), {labels[a]: r for a, r in reports.items()}, needs, gpu)
    if mismatches:
        raise ClusterMismatchError(mismatches)
    return reports


def _label(address: str, info: Mapping[str, Any]) -> str:
    """``name (address)``, or the address alone for a worker without a name of its own."""
    name = str(info.get("name", address))
    return f"{name} ({address})" if name != address else address

