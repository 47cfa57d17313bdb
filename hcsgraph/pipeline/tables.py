"""Object tables as partitioned Parquet (or CSV) datasets: one part per group, assembled lazily.

A table special output (one row per object, e.g. ``objects`` of ``measure_objects``) is written by
:class:`TableMaterializer`, a materializer ``(data, path, filemanager) -> str``: each group's rows
go to their own part file, partitioned by well the way Hive and pyarrow read it::

    <output>/objects/well=B03/part-B03_site1.parquet
    <output>/objects/well=B03/part-B03_site2.parquet
    <output>/objects/well=C05/part-C05_site1.parquet

Parts are written by the task that measured the group, atomically: writing the table needs no
process to hold all of it. (The pipeline also gathers every special output into
``result.special_outputs`` and the plate-wide ``<name>.csv``, on the client; a compiler that sees
``materializer.partitioned`` can leave those rows on the workers.) Each Parquet part's schema metadata holds ``hcsgraph.version``, ``hcsgraph.table``,
``hcsgraph.well``, ``hcsgraph.group`` and, when given, ``hcsgraph.plate``, ``hcsgraph.pipeline``
and any other ``hcsgraph.<key>`` (see :func:`table_materializer`). The ``well`` column is the
partition (the directory), not stored in the part.

:func:`assemble_parquet_dataset` opens every part as one ``pyarrow.dataset.Dataset`` (reading only
the footers); :func:`summarize_per_well` computes per-well object counts, means and medians from it,
one well at a time.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.dataset as pads

FORMATS = ("parquet", "csv")
PARTITION = "well"
META_PREFIX = "hcsgraph."
_PART = re.compile(r"^part-(?P<group>.+)\.(?P<ext>parquet|csv)$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def _hcsgraph_version() -> str:
    import hcsgraph

    return str(getattr(hcsgraph, "__version__", "unknown"))


def arrow_table(data: Any) -> pa.Table:
    """An Arrow table from a DataFrame, a dict (one row), a list of dicts or an Arrow table.

    Rows that all have the same keys (as ``measure_objects`` makes them) are converted straight to
    Arrow; rows with differing keys go through pandas, whose columns are the union of the keys.
    """
    import pandas as pd
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, Mapping):
        data = [data]
    if isinstance(data, Sequence) and not isinstance(data, str | bytes) and all(isinstance(r, Mapping) for r in data):
        if not data:
            return pa.table({})
        keys = list(data[0].keys())
        if all(list(r.keys()) == keys for r in data):
            try:
                return pa.Table.from_pylist(list(data))
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                pass  # mixed types in a column: let pandas decide
        return pa.Table.from_pandas(pd.DataFrame([dict(r) for r in data]), preserve_index=False)
    raise TypeError(f"table materializer: expected a DataFrame, a dict or a list of dicts, got {type(data).__name__}")


def well_of(group: str, table: Any = None) -> str:
    """The well of a group: the ``well`` column when it holds one value, else the label's first field.

    Group labels are ``<well>_<component><value>...`` (``B03_site1_channel2``). ``table`` is an
    Arrow table or a DataFrame.
    """
    if table is not None and PARTITION in table.column_names and table.num_rows:
        wells = sorted({str(w) for w in table.column(PARTITION).unique().to_pylist()})
        if len(wells) == 1:
            return wells[0]
        raise ValueError(f"table materializer: one group's rows name several wells: {wells[:5]}")
    return group.split("_", 1)[0]


def part_path(path: str, well: str, group: str, fmt: str) -> str:
    """``<dir of path>/well=<well>/part-<group>.<fmt>`` for a materializer's base path."""
    root = os.path.dirname(os.fspath(path))
    return os.path.join(root, f"{PARTITION}={_UNSAFE.sub('_', well)}", f"part-{_UNSAFE.sub('_', group)}.{fmt}")


@dataclass(frozen=True)
class TableMaterializer:
    """Writes one group's table as one part of a well-partitioned dataset; returns the part's path.

    ``path`` (given by the pipeline) is ``<output>/<table>/<group>``; the part goes to
    ``<output>/<table>/well=<well>/part-<group>.parquet`` (``.csv`` with ``format="csv"``).
    ``metadata`` is stored as ``hcsgraph.<key>`` entries of each Parquet part's schema metadata
    (CSV parts carry none). A group with no rows still writes its (empty) part, so every group
    that ran has one.
    """

    format: str = "parquet"
    metadata: tuple[tuple[str, str], ...] = ()
    compression: str | None = "zstd"

    partitioned: ClassVar[bool] = True
    """Marks a materializer that writes the whole table by parts: the rows need not reach the client."""

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"table materializer: format={self.format!r} must be one of {', '.join(FORMATS)}")

    def with_metadata(self, **values: Any) -> TableMaterializer:
        """A copy that also records ``values`` (e.g. ``plate=``, ``pipeline=``, ``run_id=``); None is skipped."""
        merged = dict(self.metadata)
        merged.update({str(k): _meta_text(v) for k, v in values.items() if v is not None})
        return replace(self, metadata=tuple(sorted(merged.items())))

    def schema_metadata(self, table: str, well: str, group: str) -> dict[str, str]:
        """The ``hcsgraph.*`` metadata of one part."""
        meta = {"version": _hcsgraph_version(), "table": table, "well": well, "group": group, **dict(self.metadata)}
        return {f"{META_PREFIX}{k}": v for k, v in meta.items()}

    def __call__(self, data: Any, path: str, filemanager: Any) -> str:
        rows = arrow_table(data)
        group = os.path.basename(os.fspath(path))
        name = os.path.basename(os.path.dirname(os.fspath(path))) or "table"
        well = well_of(group, rows)
        if PARTITION in rows.column_names:
            rows = rows.drop_columns([PARTITION])
        target = part_path(path, well, group, self.format)
        if self.format == "csv":
            content: Any = rows.to_pandas().to_csv(index=False)
        else:
            content = parquet_bytes(rows, self.schema_metadata(name, well, group), self.compression)
        filemanager.ensure_directory(os.path.dirname(target), "disk")
        filemanager.save(content, target, "disk", overwrite=True)
        return target


def _meta_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def parquet_bytes(data: Any, metadata: Mapping[str, str] | None = None, compression: str | None = "zstd") -> bytes:
    """A table (see :func:`arrow_table`) as the bytes of a Parquet file whose schema metadata also holds ``metadata``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = arrow_table(data)
    merged = dict(table.schema.metadata or {})
    merged.update({k.encode(): v.encode() for k, v in (metadata or {}).items()})
    table = table.replace_schema_metadata(merged)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=compression or "none")
    return sink.getvalue().to_pybytes()


def table_materializer(format: str = "parquet", *, plate: str | None = None, pipeline: str | None = None,  # noqa: A002
                       compression: str | None = "zstd", **metadata: Any) -> TableMaterializer:
    """A table materializer recording ``plate``, ``pipeline`` and any other ``metadata`` in each part.

    >>> from hcsgraph.pipeline import special_outputs
    >>> @special_outputs(("objects", table_materializer(plate="P07", pipeline="nuclei")))
    ... def my_measure(stack): ...
    """
    return TableMaterializer(format, compression=compression).with_metadata(plate=plate, pipeline=pipeline, **metadata)


materialize_parquet = TableMaterializer("parquet")
"""One Parquet part per group, partitioned by well (the default for ``objects`` tables)."""

materialize_table_csv = TableMaterializer("csv")
"""One CSV part per group, partitioned by well."""


# ------------------------------------------------------------------------------------- reading


def part_files(root: str | os.PathLike, format: str = "parquet",  # noqa: A002
               storage_options: Any = None) -> list[str]:
    """Every part file under ``root`` (``well=<W>/part-*.<format>``), sorted by well then group.

    ``root`` may be a URL (``storage_options``: fsspec's options); the parts are then URLs too.
    """
    if format not in FORMATS:
        raise ValueError(f"format={format!r} must be one of {', '.join(FORMATS)}")
    root = os.fspath(root)
    from hcsgraph.io import location as loc

    if loc.is_url(root):
        found = loc.find(root, storage_options) if loc.isdir(root, storage_options) else {}
        parts = []
        for rel in found:
            folder, _, name = rel.rpartition("/")
            match = _PART.match(name)
            if folder.startswith(f"{PARTITION}=") and "/" not in folder and match and match["ext"] == format:
                parts.append(loc.join(root, folder, name))
        return sorted(parts)
    out = []
    for entry in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        folder = os.path.join(root, entry)
        if not (entry.startswith(f"{PARTITION}=") and os.path.isdir(folder)):
            continue
        for name in sorted(os.listdir(folder)):
            match = _PART.match(name)
            if match and match["ext"] == format:
                out.append(os.path.join(folder, name))
    return out


def _partitioning() -> Any:
    import pyarrow as pa
    import pyarrow.dataset as pads

    return pads.partitioning(pa.schema([(PARTITION, pa.string())]), flavor="hive")


def assemble_parquet_dataset(root: str | os.PathLike, format: str = "parquet",  # noqa: A002
                             storage_options: Any = None) -> pads.Dataset:
    """All parts under ``root`` as one ``pyarrow.dataset.Dataset`` with a ``well`` column.

    Only the part footers are read: the schema is the union of the parts' schemas (a column missing
    from a part reads as null; an integer column that is float elsewhere reads as float), and keeps
    the plate-wide ``hcsgraph.*`` metadata of the first part (its ``hcsgraph.group`` and
    ``hcsgraph.well`` are dropped). ``format="csv"`` opens CSV parts instead. Nothing is loaded until
    the dataset is scanned (``to_table(columns=..., filter=...)``, ``to_batches()``). ``root`` may
    be a URL (``storage_options``: fsspec's options).
    """
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    from hcsgraph.io import location as loc

    root = os.fspath(root)
    files = part_files(root, format, storage_options)
    if not files:
        raise FileNotFoundError(f"no {format} parts (well=<W>/part-*.{format}) under {loc.redact(root)}")
    filesystem = None
    if loc.is_url(root):
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        fs, root = loc.filesystem(root, storage_options)
        files = [loc.filesystem(f, storage_options)[1] for f in files]
        filesystem = PyFileSystem(FSSpecHandler(fs))
    if format == "csv":
        return pads.dataset(files, format="csv", partitioning=_partitioning(), partition_base_dir=root,
                            filesystem=filesystem)
    schemas = [pq.read_schema(f, filesystem=filesystem) for f in files]
    schema = pa.unify_schemas([_without_pandas(s) for s in schemas], promote_options="permissive")
    if PARTITION in schema.names:
        schema = schema.remove(schema.get_field_index(PARTITION))
    schema = schema.append(pa.field(PARTITION, pa.string()))
    meta = {k: v for k, v in (schemas[0].metadata or {}).items()
            if k.startswith(META_PREFIX.encode()) and k not in (b"hcsgraph.group", b"hcsgraph.well")}
    schema = schema.with_metadata(meta)
    return pads.dataset(files, schema=schema, format="parquet", partitioning=_partitioning(),
                        partition_base_dir=root, filesystem=filesystem)


def _without_pandas(schema: pa.Schema) -> pa.Schema:
    """A part's schema without its pandas metadata (each part's differs; it only describes that part)."""
    meta = {k: v for k, v in (schema.metadata or {}).items() if k != b"pandas"}
    return schema.with_metadata(meta)


def _wells(dataset: pads.Dataset) -> list[str]:
    wells: list[str] = []
    for path in dataset.files:
        folder = os.path.basename(os.path.dirname(path))
        if folder.startswith(f"{PARTITION}=") and folder[len(PARTITION) + 1:] not in wells:
            wells.append(folder[len(PARTITION) + 1:])
    return wells


def summarize_per_well(dataset: pads.Dataset | str | os.PathLike, features: Iterable[str],
                       by: Sequence[str] = (), *, medians: bool = True) -> pd.DataFrame:
    """One row per well (and per value of ``by``, e.g. ``by=["objects"]``): object count, mean and median.

    Columns: ``well``, ``by``..., ``object_count``, then ``<feature>_mean`` and ``<feature>_median``
    for each feature (nulls and NaNs skipped, as pandas does). ``dataset`` is a dataset from
    :func:`assemble_parquet_dataset` or the directory to assemble. The wells are read one at a time
    and only the ``by`` and ``features`` columns, batch by batch: counts and means never hold more
    than one part's batch; medians hold the feature values of one well (``medians=False`` skips
    them and streams everything).
    """
    import numpy as np
    import pandas as pd
    import pyarrow.dataset as pads

    if not isinstance(dataset, pads.Dataset):
        dataset = assemble_parquet_dataset(dataset)
    features = list(features)
    by = [b for b in by if b != PARTITION]
    missing = [c for c in [*by, *features] if c not in dataset.schema.names]
    if missing:
        raise KeyError(f"summarize_per_well: no column {missing[0]!r} in the dataset (columns: {dataset.schema.names})")
    rows = []
    for well in _wells(dataset):
        scanner = dataset.scanner(columns=[*by, *features], filter=pads.field(PARTITION) == well)
        acc: dict[tuple[Any, ...], dict[str, Any]] = {}
        for batch in scanner.to_batches():
            if batch.num_rows == 0:
                continue
            frame = batch.to_pandas()
            groups = frame.groupby(by, sort=False, dropna=False) if by else [((), frame)]
            for key, part in groups:
                key = key if isinstance(key, tuple) else (key,)
                slot = acc.setdefault(key, {"count": 0, "sum": np.zeros(len(features)), "n": np.zeros(len(features)),
                                            "values": [[] for _ in features]})
                slot["count"] += len(part)
                for i, name in enumerate(features):
                    values = pd.to_numeric(part[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
                    values = values[~np.isnan(values)]
                    slot["sum"][i] += values.sum()
                    slot["n"][i] += values.size
                    if medians:
                        slot["values"][i].append(values)
        for key, slot in acc.items():
            row: dict[str, Any] = {PARTITION: well, **dict(zip(by, key, strict=True)), "object_count": slot["count"]}
            for i, name in enumerate(features):
                n = slot["n"][i]
                row[f"{name}_mean"] = slot["sum"][i] / n if n else np.nan
                if medians:
                    values = np.concatenate(slot["values"][i]) if slot["values"][i] else np.zeros(0)
                    row[f"{name}_median"] = float(np.median(values)) if values.size else np.nan
            rows.append(row)
    columns = [PARTITION, *by, "object_count"]
    for name in features:
        columns += [f"{name}_mean"] + ([f"{name}_median"] if medians else [])
    return pd.DataFrame(rows, columns=columns)


__all__ = [
    "TableMaterializer",
    "arrow_table",
    "assemble_parquet_dataset",
    "materialize_parquet",
    "materialize_table_csv",
    "parquet_bytes",
    "part_files",
    "summarize_per_well",
    "table_materializer",
    "well_of",
]
