"""Standard materializers: write a special output to files through a FileManager.

A materializer has the signature ``(data, path, filemanager) -> str``. ``path`` is a base path
without extension; the materializer appends its own (``.csv``, ``.json``, ``.tif``, ``.zarr``),
creates the parent directory, writes atomically (existing files are replaced) and returns the
path of the main file it wrote.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DISK = "disk"
ZARR = "zarr"


def _parent(path: str) -> str:
    return posixpath.dirname(str(path).replace("\\", "/"))


def _write(filemanager: Any, content: Any, path: str, backend: str = DISK) -> str:
    parent = _parent(path)
    if parent:
        filemanager.ensure_directory(parent, DISK)
    filemanager.save(content, path, backend, overwrite=True)
    return path


def _to_jsonable(value: Any) -> Any:
    """Plain JSON types for numpy scalars/arrays, DataFrames, tuples and mappings."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "to_dict") and hasattr(value, "columns"):
        return [_to_jsonable(r) for r in value.to_dict(orient="records")]
    if isinstance(value, Mapping):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _to_frame(data: Any) -> Any:
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, Mapping):
        data = [data]
    if isinstance(data, Sequence) and not isinstance(data, str | bytes) and all(isinstance(r, Mapping) for r in data):
        return pd.DataFrame(list(data))
    raise TypeError(
        f"materialize_csv: expected a DataFrame, a dict or a list of dicts, got {type(data).__name__}"
    )


def materialize_csv(data: Any, path: str, filemanager: Any) -> str:
    """A DataFrame, a dict or a list of dicts as ``<path>.csv`` (one row per dict)."""
    return _write(filemanager, _to_frame(data).to_csv(index=False), f"{path}.csv")


def materialize_json(data: Any, path: str, filemanager: Any) -> str:
    """Any JSON-representable value (numpy values and DataFrames included) as ``<path>.json``."""
    text = json.dumps(_to_jsonable(data), indent=2, allow_nan=False)
    return _write(filemanager, text, f"{path}.json")


def _as_host_array(data: Any, name: str) -> np.ndarray:
    if hasattr(data, "detach"):
        data = data.detach().cpu().numpy()  # torch
    elif hasattr(data, "get") and hasattr(data, "shape") and not isinstance(data, np.ndarray):
        data = data.get()  # cupy / OpenCL arrays
    array = np.asarray(data)
    if array.dtype == object:
        raise TypeError(f"{name}: expected a numeric array, got objects of type {type(data).__name__}")
    return array


def materialize_tiff(data: Any, path: str, filemanager: Any) -> str:
    """An array (any memory type, copied to the host) as ``<path>.tif``; dtype and values kept."""
    return _write(filemanager, _as_host_array(data, "materialize_tiff"), f"{path}.tif")


def materialize_zarr(data: Any, path: str, filemanager: Any) -> str:
    """An array (any memory type, copied to the host) as the Zarr array ``<path>.zarr``."""
    return _write(filemanager, _as_host_array(data, "materialize_zarr"), f"{path}.zarr", ZARR)


def materialize_cell_counts(data: Any, path: str, filemanager: Any) -> str:
    """Per-slice cell counts as ``<path>.csv`` (one row per slice) and ``<path>.json`` (rows plus totals).

    Returns the CSV path.
    """
    frame = _to_frame(data)
    csv_path = _write(filemanager, frame.to_csv(index=False), f"{path}.csv")
    rows = _to_jsonable(frame)
    summary = {
        "total_slices": len(rows),
        "total_cells": int(frame["cell_count"].sum()) if "cell_count" in frame else 0,
        "slices": rows,
    }
    _write(filemanager, json.dumps(summary, indent=2, allow_nan=False), f"{path}.json")
    return csv_path
