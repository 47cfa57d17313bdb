"""`RunResult`: what computing a pipeline returns, and the run manifest written with the output."""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pandas as pd

from hcsgraph.pipeline.errors import StepExecutionError
from hcsgraph.pipeline.tasks import WellStatus, write_json_atomic

_VERSIONED = ("hcsgraph", "dask", "distributed", "numpy", "zarr", "tifffile", "scipy", "skimage", "pandas",
              "torch", "jax", "tensorflow", "pyclesperanto_prototype", "pyclesperanto", "cupy")


@dataclass
class RunResult:
    """The outcome of a run.

    Attributes:
        output: the output directory; ``image_store`` the OME-Zarr plate or TIFF directory in it.
        wells: one row per well: status (complete / failed / skipped), planes written, seconds.
        special_outputs: each special output as a DataFrame (one row per group, or per record
            when the function returns a list of dicts or a DataFrame), with well and group columns.
        materialized: the files each special output was materialised to.
        failures: one entry per failed group (step, well, group, message, files).
        recoveries: GPU out-of-memory recoveries counted by ``"<framework>:<action>"``.
        timings: seconds per well and step (summed over the well's groups).
        manifest: path of ``run.json``.
    """

    output: str
    image_store: str
    backend: str
    wells: pd.DataFrame
    special_outputs: dict[str, pd.DataFrame]
    materialized: dict[str, list[str]]
    failures: list[dict[str, Any]]
    recoveries: dict[str, int]
    timings: pd.DataFrame
    manifest: str

    @property
    def ok(self) -> bool:
        """True when every well completed."""
        return not self.failures and bool((self.wells["status"] != "failed").all())

    def __repr__(self) -> str:
        counts = self.wells["status"].value_counts().to_dict() if len(self.wells) else {}
        return (f"<RunResult {self.output}: wells {counts}, special outputs {sorted(self.special_outputs)}, "
                f"{len(self.failures)} failures>")


def _rows(name: str, well: str, group: str, value: Any) -> list[dict[str, Any]]:
    if isinstance(value, pd.DataFrame):
        records = value.to_dict(orient="records")
    elif isinstance(value, list | tuple) and all(isinstance(v, dict) for v in value):
        records = [dict(v) for v in value]
    elif isinstance(value, dict):
        records = [dict(value)]
    elif hasattr(value, "__dataclass_fields__"):
        records = [dict(vars(value))]
    else:
        records = [{name: value}]
    return [{"well": well, "group": group, **r} for r in records]


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for mod in _VERSIONED:
        module = sys.modules.get(mod)
        if module is None and mod in ("hcsgraph", "dask", "distributed", "numpy", "zarr", "tifffile"):
            try:
                module = __import__(mod)
            except ImportError:
                module = None
        if module is not None:
            out[mod] = str(getattr(module, "__version__", "unknown"))
    return out


def finalize_run(spec: Any, statuses: list[WellStatus]) -> RunResult:
    """The last task: assemble the result, write the plate-wide tables and the manifest."""
    by_well = {s.well: s for s in statuses}
    rows = []
    timing_rows = []
    failures: list[dict[str, Any]] = []
    specials: dict[str, list[dict[str, Any]]] = {name: [] for name in spec.special_tables}
    materialized: dict[str, list[str]] = {}
    recoveries: Counter = Counter()
    for well in spec.wells:
        if well in spec.skipped:
            rows.append({"well": well, "status": "skipped", "planes": 0, "seconds": 0.0, "error": ""})
            continue
        status = by_well[well]
        rows.append({
            "well": well,
            "status": status.status,
            "planes": status.planes,
            "seconds": round(sum(status.seconds.values()), 6),
            "error": "; ".join(e["message"] for e in status.errors),
        })
        timing_rows.extend({"well": well, "step": k, "seconds": v} for k, v in status.seconds.items())
        failures.extend({"well": well, **e} for e in status.errors)
        for name, items in status.specials.items():
            for group, value in items:
                specials.setdefault(name, []).extend(_rows(name, well, group, value))
        for name, paths in status.materialized.items():
            materialized.setdefault(name, []).extend(paths)
        recoveries.update(f"{kind}:{action}" for kind, action in status.recoveries)

    tables = {name: pd.DataFrame(r) for name, r in specials.items()}
    for name, table in tables.items():
        if len(table):
            path = os.path.join(spec.output, f"{name}.csv")
            _write_text_atomic(path, table.to_csv(index=False))
    wells = pd.DataFrame(rows, columns=["well", "status", "planes", "seconds", "error"])
    manifest = os.path.join(spec.output, "run.json")
    write_json_atomic(manifest, {
        "pipeline": spec.pipeline,
        "config": spec.config,
        "output": {"directory": spec.output, "images": spec.image_store, "backend": spec.backend},
        "versions": _versions(),
        "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "on_error": spec.on_error,
        "wells": rows,
        "failures": failures,
        "special_outputs": {name: f"{name}.csv" for name, t in tables.items() if len(t)},
        "recoveries": dict(recoveries),
    })
    if spec.scratch and not failures and os.path.isdir(spec.scratch):
        shutil.rmtree(spec.scratch, ignore_errors=True)
    if failures and spec.on_error == "stop":  # defensive: stop mode raises in the failing task
        first = failures[0]
        raise StepExecutionError(first["step"], first["well"], first["message"], tuple(first["files"]))
    return RunResult(
        output=spec.output,
        image_store=spec.image_store,
        backend=spec.backend,
        wells=wells,
        special_outputs=tables,
        materialized=materialized,
        failures=failures,
        recoveries=dict(recoveries),
        timings=pd.DataFrame(timing_rows, columns=["well", "step", "seconds"]),
        manifest=manifest,
    )


def _write_text_atomic(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    os.replace(tmp, path)


__all__ = ["RunResult", "finalize_run"]
