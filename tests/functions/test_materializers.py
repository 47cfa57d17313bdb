"""Standard materializers write real files through a real FileManager."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr

from hcsgraph.io import FileManager
from hcsgraph.pipeline.materializers import (
    materialize_cell_counts,
    materialize_csv,
    materialize_json,
    materialize_tiff,
    materialize_zarr,
)

ROWS = [
    {"slice_index": 0, "cell_count": 7, "total_area": 900, "mean_area": 128.6},
    {"slice_index": 1, "cell_count": 4, "total_area": 500, "mean_area": 125.0},
]


@pytest.fixture()
def fm():
    return FileManager()


def test_cell_counts_csv_and_json(tmp_path, fm):
    base = str(tmp_path / "A01" / "cell_counts")
    written = materialize_cell_counts(ROWS, base, fm)
    assert written == base + ".csv"
    table = pd.read_csv(written)
    assert list(table.columns) == ["slice_index", "cell_count", "total_area", "mean_area"]
    assert table["cell_count"].tolist() == [7, 4]
    summary = json.loads((tmp_path / "A01" / "cell_counts.json").read_text())
    assert summary["total_cells"] == 11 and summary["total_slices"] == 2
    assert summary["slices"][1] == ROWS[1]
    # run again with other data: the files are replaced
    materialize_cell_counts(ROWS[:1], base, fm)
    assert pd.read_csv(written)["cell_count"].tolist() == [7]


def test_csv_from_dataframe_and_dicts(tmp_path, fm):
    frame = pd.DataFrame({"well": ["A01", "B02"], "value": [1.5, np.nan]})
    path = materialize_csv(frame, str(tmp_path / "table"), fm)
    pd.testing.assert_frame_equal(pd.read_csv(path), frame)
    path = materialize_csv(ROWS, str(tmp_path / "rows"), fm)
    assert pd.read_csv(path).to_dict(orient="records") == ROWS
    with pytest.raises(TypeError, match="materialize_csv"):
        materialize_csv(42, str(tmp_path / "bad"), fm)


def test_json_with_numpy_values(tmp_path, fm):
    data = {"count": np.int64(3), "areas": np.array([1.5, 2.0]), "name": "A01"}
    path = materialize_json(data, str(tmp_path / "sub" / "info"), fm)
    assert path.endswith("info.json")
    assert json.loads(open(path).read()) == {"count": 3, "areas": [1.5, 2.0], "name": "A01"}


def test_tiff_keeps_dtype_and_values(tmp_path, fm):
    stack = np.arange(2 * 5 * 6, dtype=np.uint16).reshape(2, 5, 6) * 1000
    path = materialize_tiff(stack, str(tmp_path / "masks" / "labels"), fm)
    assert path.endswith("labels.tif")
    back = tifffile.imread(path)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, stack)


def test_tiff_from_torch(tmp_path, fm):
    torch = pytest.importorskip("torch")
    tensor = torch.arange(12, dtype=torch.float32).reshape(1, 3, 4)
    path = materialize_tiff(tensor, str(tmp_path / "t"), fm)
    np.testing.assert_array_equal(tifffile.imread(path).reshape(1, 3, 4), tensor.numpy())


def test_zarr_array(tmp_path, fm):
    labels = np.random.default_rng(1).integers(0, 50, size=(3, 16, 16)).astype(np.int32)
    path = materialize_zarr(labels, str(tmp_path / "labels"), fm)
    assert path.endswith("labels.zarr")
    back = zarr.open_array(path, mode="r")
    assert back.dtype == np.int32 and back.shape == labels.shape
    np.testing.assert_array_equal(back[:], labels)
