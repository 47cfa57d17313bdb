"""Label images in the OME-Zarr plate: labels/<name>, image-label metadata, readers see them."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import tifffile
import zarr

from hcsgraph import FunctionStep, GlobalPipelineConfig, Pipeline, VFSConfig, ZarrConfig
from hcsgraph.functions import get
from hcsgraph.plate import open_plate
from hcsgraph.plate.synthetic import make_plate


@pytest.fixture(scope="module")
def small_plate(tmp_path_factory):
    return make_plate(tmp_path_factory.mktemp("labels") / "plate", n_wells=2, sites=2, channels=2, size=(64, 64),
                      seed=12)


SEGMENT = Pipeline([FunctionStep("gaussian_filter", sigma=1), FunctionStep("threshold_otsu"),
                    FunctionStep("label", output="labels:nuclei"), FunctionStep("count_cells")], name="segment")


def expected_labels(path: str) -> np.ndarray:
    stack = tifffile.imread(path)[None]
    mask = get("threshold_otsu")(get("gaussian_filter")(stack, sigma=1))
    return get("label")(mask)[0]


def planes_of(plate) -> dict[tuple[str, int, int], str]:
    table = open_plate(plate.path).table
    return {(w, int(s), int(c)): p for w, s, c, p in zip(table["well"], table["site"], table["channel"],
                                                          table["path"], strict=True)}


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_labels_land_in_the_plate_and_the_image_stays_the_input(small_plate, tmp_path, version):
    cfg = GlobalPipelineConfig(zarr=ZarrConfig(ome_zarr_version=version, pyramid_levels=2))
    result = SEGMENT.compile(small_plate.path, tmp_path / "o", cfg).compute(scheduler="threads")
    assert result.ok and len(result.special_outputs["cell_counts"]) == 8
    store = result.image_store
    for (well, site, channel), path in planes_of(small_plate).items():
        field = f"{well[0]}/{int(well[1:])}/{site - 1}"
        image = zarr.open_array(os.path.join(store, field, "0"), mode="r")
        labels = zarr.open_array(os.path.join(store, field, "labels", "nuclei", "0"), mode="r")
        assert image.dtype == np.uint16 and labels.dtype == np.uint16  # 64² planes: at most 2048 labels
        np.testing.assert_array_equal(image[0, channel - 1, 0], tifffile.imread(path))
        np.testing.assert_array_equal(labels[0, channel - 1, 0], expected_labels(path))
        level1 = zarr.open_array(os.path.join(store, field, "labels", "nuclei", "1"), mode="r")
        np.testing.assert_array_equal(level1[0, channel - 1, 0], labels[0, channel - 1, 0][::2, ::2])

    import ome_zarr_models.v04 as v04
    import ome_zarr_models.v05 as v05

    models = v05 if version == "0.5" else v04
    group = zarr.open_group(store, mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models.HCS.from_zarr(group)
        listing = models.Labels.from_zarr(group["A/1/0/labels"])
        label = models.ImageLabel.from_zarr(group["A/1/0/labels/nuclei"])
    attrs = listing.attributes.ome if version == "0.5" else listing.attributes
    assert list(attrs.labels) == ["nuclei"]
    image_label = (label.attributes.ome if version == "0.5" else label.attributes).image_label
    assert image_label.source.image == "../../"

    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Labels, Reader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nodes = list(Reader(parse_url(os.path.join(store, "A", "1", "0")))())
    kinds = {type(spec) for node in nodes for spec in node.specs}
    assert Labels in kinds and Label in kinds


def test_an_image_step_chooses_the_field_image(small_plate, tmp_path):
    pipeline = Pipeline([FunctionStep("gaussian_filter", sigma=1, output="image"), FunctionStep("threshold_otsu"),
                         FunctionStep("label", output="labels:nuclei")], name="segment")
    result = pipeline.compile(small_plate.path, tmp_path / "o").compute(scheduler="threads")
    assert result.ok
    (well, site, channel), path = next(iter(planes_of(small_plate).items()))
    field = f"{well[0]}/{int(well[1:])}/{site - 1}"
    image = zarr.open_array(os.path.join(result.image_store, field, "0"), mode="r")[0, channel - 1, 0]
    smoothed = get("gaussian_filter")(tifffile.imread(path)[None], sigma=1)[0]
    np.testing.assert_array_equal(image, smoothed)


def test_labels_with_tiff_output(small_plate, tmp_path):
    cfg = GlobalPipelineConfig(vfs=VFSConfig(materialization_backend="disk"))
    result = SEGMENT.compile(small_plate.path, tmp_path / "o", cfg).compute(scheduler="threads")
    assert result.ok
    (well, site, channel), path = next(iter(planes_of(small_plate).items()))
    name = f"{well}_s{site}_w{channel}_z1_t1.tif"
    labels = tifffile.imread(tmp_path / "o" / "labels" / "nuclei" / well / name)
    np.testing.assert_array_equal(labels, expected_labels(path))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "o" / "images" / well / name), tifffile.imread(path))


def test_a_bad_output_name_is_refused():
    from hcsgraph.pipeline.errors import PipelineCompileError

    with pytest.raises(PipelineCompileError, match="labels:<name>"):
        FunctionStep("label", output="labels:../x")
    with pytest.raises(PipelineCompileError, match="labels:<name>"):
        FunctionStep("label", output="mask")
