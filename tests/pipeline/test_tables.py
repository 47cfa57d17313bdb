"""Object tables: Parquet/CSV parts per group, the assembled dataset, per-well summaries."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from hcsgraph.io import FileManager
from hcsgraph.pipeline.tables import (
    TableMaterializer,
    assemble_parquet_dataset,
    materialize_parquet,
    materialize_table_csv,
    part_files,
    summarize_per_well,
    table_materializer,
    well_of,
)


def rows(n: int, seed: int, site: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"site": site, "channel": 1, "z": 1, "t": 1, "slice_index": 0, "label": i + 1,
             "area": int(rng.integers(50, 200)), "DAPI_mean": float(rng.normal(1000, 100))} for i in range(n)]


@pytest.fixture()
def fm():
    return FileManager()


@pytest.fixture()
def written(tmp_path, fm):
    """Five groups in three wells written by a materializer with plate metadata; the frames kept."""
    materializer = table_materializer(plate="P07", pipeline="nuclei-and-cells", run_id="r1")
    root = tmp_path / "out" / "objects"
    frames = {}
    for i, group in enumerate(["A01_site1", "A01_site2", "B03_site1", "B03_site2", "C12_site1"]):
        data = rows(10 + 7 * i, seed=i, site=int(group[-1]))
        path = materializer(data, str(root / group), fm)
        frames[group] = (path, pd.DataFrame(data))
    return root, frames


def test_parts_are_hive_partitioned_by_well_with_metadata(written):
    root, frames = written
    path, frame = frames["B03_site2"]
    assert path == str(root / "well=B03" / "part-B03_site2.parquet")
    assert sorted(os.listdir(root)) == ["well=A01", "well=B03", "well=C12"]
    table = pq.read_table(path)
    assert "well" not in table.column_names  # the partition is the directory
    pd.testing.assert_frame_equal(table.to_pandas(), frame)
    meta = pq.read_schema(path).metadata
    assert meta[b"hcsgraph.plate"] == b"P07" and meta[b"hcsgraph.pipeline"] == b"nuclei-and-cells"
    assert meta[b"hcsgraph.run_id"] == b"r1" and meta[b"hcsgraph.table"] == b"objects"
    assert meta[b"hcsgraph.well"] == b"B03" and meta[b"hcsgraph.group"] == b"B03_site2"
    import hcsgraph

    assert meta[b"hcsgraph.version"] == hcsgraph.__version__.encode()
    assert len(part_files(root)) == 5


def test_pyarrow_reads_the_partitioned_dataset(written):
    root, frames = written
    dataset = assemble_parquet_dataset(root)
    assert dataset.schema.field("well").type == pa.string()
    assert dataset.schema.metadata[b"hcsgraph.plate"] == b"P07"
    assert b"hcsgraph.group" not in dataset.schema.metadata
    table = dataset.to_table().to_pandas()
    assert len(table) == sum(len(f) for _, f in frames.values())
    assert table.groupby("well").size().to_dict() == {"A01": 10 + 17, "B03": 24 + 31, "C12": 38}
    # pruning by the partition reads only that well's parts
    only = dataset.to_table(filter=pads.field("well") == "C12", columns=["label"])
    assert only.num_rows == 38
    # plain pyarrow, with hive partitioning discovered from the paths, reads the same rows
    plain = pads.dataset(str(root), format="parquet", partitioning="hive").to_table()
    assert plain.num_rows == len(table)


def test_summary_per_well_equals_pandas(written):
    root, frames = written
    full = pd.concat([f.assign(well=g.split("_")[0]) for g, (_, f) in frames.items()], ignore_index=True)
    summary = summarize_per_well(root, ["area", "DAPI_mean"])
    assert list(summary.columns) == ["well", "object_count", "area_mean", "area_median", "DAPI_mean_mean",
                                     "DAPI_mean_median"]
    expected = full.groupby("well").agg(object_count=("label", "size"), area_mean=("area", "mean"),
                                        area_median=("area", "median"), DAPI_mean_mean=("DAPI_mean", "mean"),
                                        DAPI_mean_median=("DAPI_mean", "median")).reset_index()
    pd.testing.assert_frame_equal(summary, expected, check_dtype=False, rtol=1e-12)
    by_site = summarize_per_well(assemble_parquet_dataset(root), ["area"], by=["site"], medians=False)
    assert list(by_site.columns) == ["well", "site", "object_count", "area_mean"]
    got = by_site.set_index(["well", "site"])["area_mean"].sort_index()
    want = full.groupby(["well", "site"])["area"].mean()
    pd.testing.assert_series_equal(got, want, check_names=False, rtol=1e-12)
    with pytest.raises(KeyError, match="no column 'volume'"):
        summarize_per_well(root, ["volume"])


def test_schema_union_missing_columns_empty_parts_and_nulls(tmp_path, fm):
    root = tmp_path / "objects"
    materialize_parquet([{"label": 1, "area": 10, "GFP_mean": 5.0}], str(root / "A01_site1"), fm)
    materialize_parquet([{"label": 1, "area": 12.5}], str(root / "A01_site2"), fm)  # no GFP; area float
    materialize_parquet([], str(root / "B01_site1"), fm)  # a group with no objects
    materialize_parquet(pd.DataFrame({"label": [2], "area": [3], "GFP_mean": [np.nan]}), str(root / "B01_site2"), fm)
    dataset = assemble_parquet_dataset(root)
    assert dataset.schema.field("area").type == pa.float64()
    table = dataset.to_table().to_pandas().sort_values(["well", "area"]).reset_index(drop=True)
    assert table["well"].tolist() == ["A01", "A01", "B01"]
    assert table["GFP_mean"].isna().tolist() == [False, True, True]
    summary = summarize_per_well(dataset, ["GFP_mean"]).set_index("well")
    assert summary.loc["A01", "object_count"] == 2 and summary.loc["A01", "GFP_mean_mean"] == 5.0
    assert summary.loc["B01", "object_count"] == 1 and np.isnan(summary.loc["B01", "GFP_mean_median"])


def test_rows_with_differing_keys_or_mixed_types(tmp_path, fm):
    root = tmp_path / "objects"
    path = materialize_parquet([{"label": 1}, {"label": 2, "GFP_mean": 3.5}], str(root / "A01_site1"), fm)
    assert pq.read_table(path).to_pydict() == {"label": [1, 2], "GFP_mean": [None, 3.5]}
    path = materialize_parquet([{"label": 1, "area": 2}, {"label": 2, "area": 2.5}], str(root / "A01_site2"), fm)
    assert pq.read_table(path).column("area").to_pylist() == [2.0, 2.5]


def test_well_from_data_and_rewrites(tmp_path, fm):
    root = tmp_path / "objects"
    path = materialize_parquet([{"well": "D04", "label": 1}], str(root / "odd-group-name"), fm)
    assert path.endswith(os.path.join("well=D04", "part-odd-group-name.parquet"))
    materialize_parquet([{"well": "D04", "label": 7}, {"well": "D04", "label": 8}], str(root / "odd-group-name"), fm)
    assert pq.read_table(path).column("label").to_pylist() == [7, 8]  # replaced, not appended
    with pytest.raises(ValueError, match="several wells"):
        materialize_parquet([{"well": "A01"}, {"well": "A02"}], str(root / "x"), fm)
    assert well_of("H12_site3_channel2") == "H12" and well_of("H12") == "H12"
    with pytest.raises(TypeError, match="list of dicts"):
        materialize_parquet(42, str(root / "y"), fm)
    with pytest.raises(ValueError, match="format"):
        TableMaterializer("xlsx")


def test_csv_parts(tmp_path, fm):
    root = tmp_path / "objects"
    for group, seed in (("A01_site1", 1), ("A02_site1", 2)):
        path = materialize_table_csv(rows(5, seed), str(root / group), fm)
        assert path.endswith(".csv")
    assert pd.read_csv(root / "well=A02" / "part-A02_site1.csv")["label"].tolist() == [1, 2, 3, 4, 5]
    dataset = assemble_parquet_dataset(root, format="csv")
    assert dataset.to_table().num_rows == 10
    summary = summarize_per_well(dataset, ["area"])
    assert summary["object_count"].tolist() == [5, 5]
    with pytest.raises(FileNotFoundError, match="no parquet parts"):
        assemble_parquet_dataset(root)


def test_materializer_metadata_is_immutable_and_picklable():
    import pickle

    base = TableMaterializer()
    tagged = base.with_metadata(plate="P1", extra={"a": 1}, none=None)
    assert base.metadata == () and dict(tagged.metadata) == {"plate": "P1", "extra": json.dumps({"a": 1})}
    assert pickle.loads(pickle.dumps(tagged)) == tagged


def test_pipeline_writes_one_part_per_group(tmp_path):
    """measure_objects in a pipeline: one part per group, the dataset holds every row of the run."""
    import dask

    from hcsgraph import FunctionStep, Pipeline
    from hcsgraph.plate.synthetic import make_plate

    plate = make_plate(tmp_path / "plate", n_wells=2, sites=2, channels=1, size=(96, 96), seed=3)
    pipeline = Pipeline([
        FunctionStep([("gaussian_filter", {"sigma": 1.0}), "threshold_otsu", ("watershed", {"min_distance": 3})]),
        FunctionStep("measure_objects", pixel_size_um=plate.pixel_size_um, shape_features=False),
    ], name="measure")
    with dask.config.set(scheduler="threads"):
        result = pipeline.compile(plate.path, tmp_path / "out").compute()
    assert result.ok
    parts = part_files(tmp_path / "out" / "objects")
    assert len(parts) == 2 and sorted(result.materialized["objects"]) == parts  # groups: well x channel
    table = assemble_parquet_dataset(tmp_path / "out" / "objects").to_table().to_pandas()
    in_memory = result.special_outputs["objects"]
    assert len(table) == len(in_memory) > 10
    assert {"site", "channel", "z", "t", "label", "area_um2"} <= set(table.columns)
    counts = table.groupby(["well", "site"]).size()
    truth = plate.counts().set_index(["well", "site"])["count"]
    assert (abs(counts - truth) <= np.maximum(1, 0.15 * truth)).all()
