"""`RunResult`: what computing a pipeline returns, and the run manifest written with the output."""

from __future__ import annotations

import datetime as _dt
import io
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from hcsgraph.io import location as loc
from hcsgraph.io.location import write_json_atomic, write_text_atomic
from hcsgraph.pipeline.errors import StepExecutionError
from hcsgraph.pipeline.tasks import WellStatus

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
        notes: what the run decided on its own (e.g. a lossless dtype promotion of some channels).
    """

    output: str
    image_store: str
    backend: str
    wells: pd.DataFrame
    special_outputs: Mapping[str, pd.DataFrame]
    materialized: dict[str, list[str]]
    failures: list[dict[str, Any]]
    recoveries: dict[str, int]
    timings: pd.DataFrame
    manifest: str
    notes: list[str] = field(default_factory=list)

    def plot_plate(self, value: str = "cell_count", *, aggregate: str = "sum", path: Any = None,
                   plate_format: int | None = None, title: str | None = None) -> Any:
        """A plate heat map of a per-well value (a numeric column of a special output, e.g.
        ``"cell_count"``, summed or averaged per well): a matplotlib Figure, saved as a PNG at
        ``path`` when given. See :func:`hcsgraph.dashboard.static.plot_plate`."""
        from hcsgraph.dashboard.static import plot_plate

        return plot_plate(self, value, aggregate=aggregate, path=path, plate_format=plate_format, title=title)

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
    """The last task: assemble the result, write the plate-wide tables and the manifest.

    With ``resume`` the tables and the manifest hold every well: those of the earlier run that
    were kept, and those of this one. The output's lock is released at the end.
    """
    if spec.guard is not None:
        spec.guard.check()
    try:
        return _finalize(spec, statuses)
    finally:
        if spec.guard is not None:
            spec.guard.release()


def _finalize(spec: Any, statuses: list[WellStatus]) -> RunResult:
    options = getattr(spec, "storage_options", None)
    by_well = {s.well: s for s in statuses}
    earlier = _earlier_run(spec) if spec.resume else {}
    earlier_rows = {r.get("well"): r for r in earlier.get("wells", []) if isinstance(r, dict)}
    rows = []
    timing_rows = []
    failures: list[dict[str, Any]] = []
    specials: dict[str, list[dict[str, Any]]] = {name: [] for name in spec.special_tables}
    materialized: dict[str, list[str]] = {}
    recoveries: Counter = Counter()
    windows: dict[str, dict[int, tuple[float, float]]] = {}
    for well in spec.wells:
        if well in spec.skipped:
            before = earlier_rows.get(well, {})
            rows.append({"well": well, "status": "skipped", "planes": int(before.get("planes", 0) or 0),
                         "seconds": 0.0, "error": ""})
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
        for store, c, lo, hi in status.windows:
            old = windows.setdefault(store, {}).get(c)
            windows[store][c] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))

    tables = {name: pd.DataFrame(r) for name, r in specials.items()}
    if spec.resume:
        tables = _merge_earlier_tables(spec, tables, earlier)
    written: list[str] = []
    for name, table in tables.items():
        if len(table):
            write_text_atomic(loc.join(spec.output, f"{name}.csv"), table.to_csv(index=False), options)
            written.append(f"{name}.csv")
    partitioned = {}
    for name in getattr(spec, "partitioned_tables", ()):
        root = loc.join(spec.output, name)
        if loc.isdir(root, options):
            partitioned[name] = root
            written.append(name)
            summary = _summarize_partitioned(root, options)
            if summary is not None:
                write_text_atomic(loc.join(spec.output, f"{name}_per_well.csv"), summary.to_csv(index=False),
                                  options)
                written.append(f"{name}_per_well.csv")
    for store, by_channel in windows.items():
        from hcsgraph.io.omezarr import set_channel_windows

        set_channel_windows(store, by_channel, merge=spec.resume, storage_options=options)
    wells = pd.DataFrame(rows, columns=["well", "status", "planes", "seconds", "error"])
    manifest = loc.join(spec.output, "run.json")
    write_json_atomic(manifest, {
        "pipeline": spec.pipeline,
        "config": spec.config,
        "run_id": spec.run_id,
        "fingerprint": spec.fingerprint,
        "output": {"directory": spec.output, "images": spec.image_store, "backend": spec.backend},
        "versions": _versions(),
        "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "on_error": spec.on_error,
        "resumed": bool(spec.resume),
        "notes": list(spec.notes),
        "wells": rows,
        "failures": failures,
        "special_outputs": {**{name: f"{name}.csv" for name, t in tables.items() if len(t)},
                            **{name: name for name in partitioned}},
        "written": written,
        "recoveries": dict(recoveries),
    }, options)
    if spec.scratch and not failures:
        loc.remove(spec.scratch, options, recursive=True, missing_ok=True)
    if failures and spec.on_error == "stop":  # defensive: stop mode raises in the failing task
        first = failures[0]
        raise StepExecutionError(first["step"], first["well"], first["message"], tuple(first["files"]))
    return RunResult(
        output=spec.output,
        image_store=spec.image_store,
        backend=spec.backend,
        wells=wells,
        special_outputs=SpecialOutputs(tables, partitioned, options),
        materialized=materialized,
        failures=failures,
        recoveries=dict(recoveries),
        timings=pd.DataFrame(timing_rows, columns=["well", "step", "seconds"]),
        manifest=manifest,
        notes=list(spec.notes),
    )


class SpecialOutputs(Mapping[str, pd.DataFrame]):
    """The run's special-output tables by name; a table written by parts (Parquet, partitioned by
    well) is read from its parts when first asked for, on the client, never by the run's last task."""

    def __init__(self, tables: dict[str, pd.DataFrame], partitioned: dict[str, str] | None = None,
                 storage_options: Any = None) -> None:
        self._tables = dict(tables)
        self._partitioned = dict(partitioned or {})
        self._options = storage_options

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self._tables and name in self._partitioned:
            from hcsgraph.pipeline.tables import assemble_parquet_dataset

            dataset = assemble_parquet_dataset(self._partitioned[name], storage_options=self._options)
            self._tables[name] = dataset.to_table().to_pandas()
        return self._tables[name]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted({*self._tables, *self._partitioned}))

    def __len__(self) -> int:
        return len({*self._tables, *self._partitioned})

    def path(self, name: str) -> str | None:
        """The folder of a table written by parts (None for the others)."""
        return self._partitioned.get(name)

    def __repr__(self) -> str:
        return f"SpecialOutputs({list(self)})"


_NOT_FEATURES = {"label", "slice_index", "site", "channel", "z", "t", "well", "group"}


def _summarize_partitioned(root: str, options: Any = None) -> pd.DataFrame | None:
    """Per-well object count, mean and median of every numeric feature of a table written by parts."""
    try:
        import pyarrow as pa

        from hcsgraph.pipeline.tables import assemble_parquet_dataset, summarize_per_well
    except ImportError:
        return None
    dataset = assemble_parquet_dataset(root, storage_options=options)
    features = [f.name for f in dataset.schema if f.name not in _NOT_FEATURES and not f.name.startswith("bbox_")
                and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))]
    by = [f.name for f in dataset.schema if f.name == "objects"]
    return summarize_per_well(dataset, features, by=by)


def _earlier_run(spec: Any) -> dict[str, Any]:
    """The manifest of the run this one resumes (empty when there is none)."""
    try:
        data = loc.read_json(loc.join(spec.output, "run.json"), getattr(spec, "storage_options", None))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _merge_earlier_tables(spec: Any, tables: dict[str, pd.DataFrame], earlier: dict[str, Any]
                          ) -> dict[str, pd.DataFrame]:
    """Each table with the earlier run's rows of the wells this run kept (skipped)."""
    kept = set(spec.skipped)
    names = set(tables) | set(earlier.get("special_outputs") or {})
    out = {}
    for name in sorted(names):
        table = tables.get(name, pd.DataFrame())
        path = loc.join(spec.output, f"{name}.csv")
        options = getattr(spec, "storage_options", None)
        if kept and loc.exists(path, options):
            before = pd.read_csv(io.BytesIO(loc.read_bytes(path, options)), dtype={"well": str, "group": str})
            before = before[before["well"].isin(kept)] if "well" in before else before.iloc[0:0]
            if len(before):
                table = pd.concat([before, table], ignore_index=True) if len(table) else before
                order = {w: i for i, w in enumerate(spec.wells)}
                rank = table["well"].map(order).fillna(len(order))
                table = table.iloc[rank.argsort(kind="stable")].reset_index(drop=True)
        out[name] = table
    return out


__all__ = ["RunResult", "finalize_run"]
