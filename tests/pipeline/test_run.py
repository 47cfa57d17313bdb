"""Running pipelines: outputs, special outputs, per-step materialisation, the result and manifest."""

from __future__ import annotations

import json
import sys

import cloudpickle
import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr

from hcsgraph import FunctionStep, Pipeline, StepMaterializationConfig
from hcsgraph.config import GlobalPipelineConfig, VFSConfig
from hcsgraph.pipeline import special_inputs, special_outputs
from hcsgraph.pipeline.materializers import materialize_json
from hcsgraph.plate import open_plate
from hcsgraph.plate.reader import read_plane

# Functions defined here travel to worker processes by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@special_outputs("shape")
def record_shape(stack):
    return stack, {"z": int(stack.shape[0]), "y": int(stack.shape[1]), "x": int(stack.shape[2])}


@special_outputs(("level", materialize_json))
def mean_level(stack):
    return stack, {"level": float(np.mean(stack))}


@special_inputs("level")
def above_level(stack, level):
    return stack > level["level"]


def test_group_is_a_zyx_stack_of_the_variable_component(plate, tmp_path):
    result = Pipeline([FunctionStep(record_shape)], name="shapes").compile(plate.path, tmp_path / "o").compute(
        scheduler="sync")
    shapes = result.special_outputs["shape"]
    assert len(shapes) == 4  # 2 wells × 2 channels
    assert set(shapes["z"]) == {2}  # the 2 sites of each well/channel
    assert set(shapes["y"]) == {128} and set(shapes["x"]) == {128}
    assert set(shapes["well"]) == {"A01", "A02"}


def test_special_output_reaches_a_later_step_and_is_materialised(plate, tmp_path):
    pipeline = Pipeline([FunctionStep(mean_level), FunctionStep(above_level)], name="levels")
    result = pipeline.compile(plate.path, tmp_path / "o").compute(scheduler="sync")
    levels = result.special_outputs["level"]
    assert len(levels) == 4 and (levels["level"] > 0).all()
    # the materialised JSON files hold the same values
    files = result.materialized["level"]
    assert len(files) == 4
    on_disk = sorted(json.load(open(f))["level"] for f in files)
    assert np.allclose(on_disk, sorted(levels["level"]))
    # the threshold used the level of its own group
    images = zarr.open_group(result.image_store, mode="r")
    mask = images["A/1/0/0"][0, 0, 0]
    original = read_plane(open_plate(plate.path).table.query("well == 'A01' and site == 1 and channel == 1")
                          ["path"].iloc[0])
    level = levels.set_index(["well", "group"]).loc[("A01", "A01_channel1_z1_t1"), "level"]
    assert mask.dtype == np.bool_
    assert np.array_equal(mask, original > level)


def test_cell_counts_are_materialised_to_csv_and_json(plate, tmp_path):
    from hcsgraph.demo import cell_count_pipeline, compare_counts

    result = cell_count_pipeline().compile(plate.path, tmp_path / "o").compute(scheduler="sync")
    counts = result.special_outputs["cell_counts"]
    assert {"well", "site", "channel", "z", "t", "cell_count"} <= set(counts.columns)
    assert len(counts) == len(plate.ground_truth)
    plate_csv = pd.read_csv(tmp_path / "o" / "cell_counts.csv")
    assert plate_csv["cell_count"].tolist() == counts["cell_count"].tolist()
    paths = result.materialized["cell_counts"]
    assert any(p.endswith(".csv") for p in paths)
    group_json = (tmp_path / "o" / "cell_counts" / "A01_channel1_z1_t1.json")
    assert group_json.exists()
    comparison = compare_counts(counts, plate.ground_truth)
    assert comparison["within"].mean() >= 0.95


def test_disk_output_is_a_tiff_directory(plate, tmp_path):
    config = GlobalPipelineConfig(vfs=VFSConfig(materialization_backend="disk"))
    result = Pipeline([FunctionStep("gaussian_filter", sigma=1)], name="p").compile(
        plate.path, tmp_path / "o", config).compute(scheduler="sync")
    tiff = tmp_path / "o" / "images" / "A02" / "A02_s2_w1_z1_t1.tif"
    assert result.image_store == str(tmp_path / "o" / "images")
    data = tifffile.imread(tiff)
    assert data.shape == (128, 128) and data.dtype == np.uint16
    from scipy import ndimage

    source = open_plate(plate.path).table.query("well == 'A02' and site == 2 and channel == 1")["path"].iloc[0]
    assert np.array_equal(data, ndimage.gaussian_filter(read_plane(source), 1))


def test_step_materialises_its_own_output(plate, tmp_path):
    pipeline = Pipeline(
        [
            FunctionStep("gaussian_filter", sigma=1,
                         materialize=StepMaterializationConfig("smoothed", backend="disk")),
            FunctionStep("threshold_otsu"),
        ],
        name="p",
    )
    result = pipeline.compile(plate.path, tmp_path / "o").compute(scheduler="sync")
    smoothed = tifffile.imread(tmp_path / "o" / "smoothed" / "images" / "A01" / "A01_s1_w2_z1_t1.tif")
    final = zarr.open_group(result.image_store, mode="r")["A/1/0/0"]
    assert smoothed.dtype == np.uint16 and final.dtype == np.bool_
    from skimage.filters import threshold_otsu

    assert np.array_equal(final[0, 1, 0], smoothed > threshold_otsu(smoothed))


def test_run_result_and_manifest(plate, tmp_path):
    result = Pipeline([FunctionStep("gaussian_filter")], name="smooth").compile(plate.path, tmp_path / "o").compute(
        scheduler="sync")
    assert result.ok
    assert result.wells["well"].tolist() == ["A01", "A02"]
    assert (result.wells["status"] == "complete").all()
    assert (result.wells["planes"] == 4).all()
    assert set(result.timings["step"]) >= {"load", "gaussian_filter", "write"}
    manifest = json.loads((tmp_path / "o" / "run.json").read_text())
    assert manifest["pipeline"]["name"] == "smooth"
    assert manifest["pipeline"]["steps"][0]["functions"]["*"][0]["func"] == "gaussian_filter"
    assert manifest["config"]["vfs"]["materialization_backend"] == "zarr"
    assert {"dask", "numpy", "zarr", "hcsgraph"} <= set(manifest["versions"])
    assert [w["status"] for w in manifest["wells"]] == ["complete", "complete"]
    for well in ("A01", "A02"):
        assert json.loads((tmp_path / "o" / ".hcsgraph" / "wells" / f"{well}.json").read_text())["status"] == "complete"


def test_intermediates_on_disk_backend(plate, tmp_path):
    config = GlobalPipelineConfig(vfs=VFSConfig(intermediate_backend="disk"))
    pipeline = Pipeline([FunctionStep("gaussian_filter"), FunctionStep("threshold_otsu")], name="p")
    graph = pipeline.compile(plate.path, tmp_path / "o", config)
    assert graph.scratch_backend == "disk"
    result = graph.compute(scheduler="sync")
    reference = pipeline.compile(plate.path, tmp_path / "ref").compute(scheduler="sync")
    a = zarr.open_group(result.image_store, mode="r")["A/2/1/0"][:]
    b = zarr.open_group(reference.image_store, mode="r")["A/2/1/0"][:]
    assert np.array_equal(a, b)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_output_plate_validates(plate, tmp_path, version):
    from ome_zarr_models import open_ome_zarr

    from hcsgraph.config import ZarrConfig

    config = GlobalPipelineConfig(zarr=ZarrConfig(ome_zarr_version=version))
    result = Pipeline([FunctionStep("gaussian_filter")], name="p").compile(plate.path, tmp_path / "o", config).compute(
        scheduler="sync")
    model = open_ome_zarr(zarr.open_group(result.image_store, mode="r"))
    assert type(model).__name__ == "HCS"


def test_pipeline_config_overrides_the_global_one(plate, tmp_path):
    disk = GlobalPipelineConfig(vfs=VFSConfig(materialization_backend="disk"))
    zarr_config = GlobalPipelineConfig(vfs=VFSConfig(materialization_backend="zarr"))
    pipeline = Pipeline([FunctionStep("gaussian_filter")], name="p", config=disk)
    result = pipeline.compile(plate.path, tmp_path / "o", zarr_config).compute(scheduler="sync")
    assert result.backend == "disk" and (tmp_path / "o" / "images").is_dir()
