"""measure_objects: values equal scikit-image's regionprops_table; the three ways to give labels;
the synthetic plate's per-nucleus truth is recovered within 2%."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skimage.measure import regionprops_table

import hcsgraph.functions as hf
from hcsgraph.functions.objects import STATS, with_materializers
from hcsgraph.pipeline.tables import TableMaterializer, materialize_parquet, table_materializer

from .test_segmentation import disks

GEOMETRY = {
    "label": "label", "centroid_y": "centroid-0", "centroid_x": "centroid-1", "area": "area",
    "bbox_min_y": "bbox-0", "bbox_min_x": "bbox-1", "bbox_max_y": "bbox-2", "bbox_max_x": "bbox-3",
    "perimeter": "perimeter", "eccentricity": "eccentricity", "solidity": "solidity",
}


def _median(mask, values):
    return np.median(values[mask])


def _integrated(mask, values):
    return np.sum(values[mask], dtype=np.float64)


def skimage_table(labels: np.ndarray, image: np.ndarray) -> pd.DataFrame:
    props = ("label", "centroid", "area", "bbox", "perimeter", "eccentricity", "solidity", "intensity_mean",
             "intensity_min", "intensity_max", "intensity_std")
    return pd.DataFrame(regionprops_table(labels, intensity_image=image, properties=props,
                                          extra_properties=(_median, _integrated)))


@pytest.fixture(scope="module")
def scene():
    from skimage.draw import ellipse

    labels = disks(shape=(80, 90), n=20, seed=11, radii=(2, 10))
    rng = np.random.default_rng(1)
    for i in range(6):  # elongated, rotated objects for the shape features
        rr, cc = ellipse(15 + 10 * i, 20 + 8 * i, 3 + i, 9, shape=labels.shape[1:], rotation=0.4 * i)
        labels[i % 2, rr, cc] = 500 + i
    dapi = rng.integers(0, 4000, labels.shape).astype(np.uint16)
    gfp = rng.normal(100, 30, labels.shape).astype(np.float32)
    return labels, dapi, gfp


def test_values_equal_regionprops_table(scene):
    labels, dapi, gfp = scene
    out, rows = hf.get("measure_objects")(labels, intensity={"DAPI": dapi, "GFP": gfp})
    assert out is labels or np.array_equal(out, labels)
    table = pd.DataFrame(rows)
    columns = ["slice_index", *GEOMETRY, *(f"{c}_{s}" for c in ("DAPI", "GFP") for s in STATS)]
    assert list(table.columns) == columns
    for z in range(labels.shape[0]):
        mine = table[table["slice_index"] == z].reset_index(drop=True)
        for channel, image in (("DAPI", dapi), ("GFP", gfp)):
            ref = skimage_table(labels[z], image[z])
            assert len(mine) == len(ref) > 10
            for ours, theirs in GEOMETRY.items():
                if ours == "eccentricity":  # closed-form eigenvalues instead of eigvalsh: last bits differ
                    np.testing.assert_allclose(mine[ours], ref[theirs], rtol=1e-12, atol=1e-6, err_msg=ours)
                else:
                    np.testing.assert_array_equal(mine[ours].to_numpy(), ref[theirs].to_numpy(), err_msg=ours)
            exact = image.dtype.kind in "iu"  # integer sums are exact in float64
            for stat, theirs in (("mean", "intensity_mean"), ("min", "intensity_min"), ("max", "intensity_max"),
                                 ("median", "_median"), ("std", "intensity_std"), ("integrated", "_integrated")):
                got, want = mine[f"{channel}_{stat}"].to_numpy(), ref[theirs].to_numpy(dtype=np.float64)
                if exact and stat != "std":
                    np.testing.assert_array_equal(got, want, err_msg=f"{channel}_{stat}")
                else:
                    # float32 images: scikit-image averages in float32, we in float64
                    np.testing.assert_allclose(got, want, rtol=1e-12 if exact else 1e-5, err_msg=f"{channel}_{stat}")


def test_record_types_and_micrometres(scene):
    labels, dapi, _ = scene
    _, rows = hf.get("measure_objects")(labels[:1], intensity={"DAPI": dapi[:1]}, pixel_size_um=0.5)
    row = rows[0]
    assert isinstance(row["label"], int) and isinstance(row["area"], int) and isinstance(row["DAPI_mean"], float)
    assert row["centroid_y_um"] == pytest.approx(row["centroid_y"] * 0.5)
    assert row["centroid_x_um"] == pytest.approx(row["centroid_x"] * 0.5)
    assert row["area_um2"] == pytest.approx(row["area"] * 0.25)
    assert row["perimeter_um"] == pytest.approx(row["perimeter"] * 0.5)
    _, fast = hf.get("measure_objects")(labels[:1], shape_features=False)
    assert "solidity" not in fast[0] and "perimeter" not in fast[0] and len(fast) == len(rows)


def test_mask_input_and_empty_planes():
    mask = np.zeros((2, 20, 20), dtype=bool)
    mask[1, 2:5, 2:5] = mask[1, 10:14, 10:12] = True
    _, rows = hf.get("measure_objects")(mask)
    assert [r["slice_index"] for r in rows] == [1, 1]
    assert [r["area"] for r in rows] == [9, 8]
    _, none = hf.get("measure_objects")(np.zeros((1, 8, 8), dtype=np.int32), intensity={"X": np.ones((1, 8, 8))})
    assert none == []


def test_channel_stack_with_labels_and_intensity_slices(scene):
    labels, dapi, gfp = scene
    field = np.stack([dapi[0], labels[0].astype(np.uint16), gfp[0].astype(np.uint16)])  # [C, Y, X]
    out, rows = hf.get("measure_objects")(field, labels_slices=1, intensity_slices={"DAPI": 0, "GFP": 2})
    assert out is field or np.array_equal(out, field)
    assert {r["slice_index"] for r in rows} == {1}
    ref = skimage_table(labels[0], dapi[0])
    np.testing.assert_array_equal([r["DAPI_mean"] for r in rows], ref["intensity_mean"])
    np.testing.assert_array_equal([r["label"] for r in rows], ref["label"])
    # named object sets: an "objects" column, slice_index the label slice
    _, named = hf.get("measure_objects")(field, labels_slices={"nuclei": 1}, intensity_slices={"DAPI": 0})
    assert {r["objects"] for r in named} == {"nuclei"} and list(named[0])[:3] == ["slice_index", "objects", "label"]
    # a [C, Y, X] intensity array measured with every label slice
    _, each = hf.get("measure_objects")(labels, intensity=np.stack([dapi[0], dapi[1]]), intensity_slices={"D": 1})
    first = [r for r in each if r["slice_index"] == 0]
    np.testing.assert_array_equal([r["D_mean"] for r in first], skimage_table(labels[0], dapi[1])["intensity_mean"])


def test_measure_objects_with_labels(scene):
    labels, dapi, gfp = scene
    func = hf.get("measure_objects_with_labels")
    assert func.special_inputs == ("labels",) and list(func.special_outputs) == ["objects"]
    intensity = np.stack([dapi[0], gfp[0].astype(np.uint16)])
    stacked = np.stack([labels[0], labels[1]])
    out, rows = func(intensity, labels=stacked, labels_slices={"nuclei": 0, "cells": 1},
                     intensity_slices={"DAPI": 0, "GFP": 1}, pixel_size_um=0.65)
    assert out is intensity or np.array_equal(out, intensity)
    table = pd.DataFrame(rows)
    assert set(table["objects"]) == {"nuclei", "cells"}
    cells = table[table["objects"] == "cells"]
    assert set(cells["slice_index"]) == {1}
    np.testing.assert_array_equal(cells["GFP_max"], skimage_table(labels[1], intensity[1])["intensity_max"])
    # without intensity_slices: label slice z on stack slice z, under the name "intensity"
    _, aligned = func(dapi, labels=labels)
    assert "intensity_mean" in aligned[0] and {r["slice_index"] for r in aligned} == {0, 1}
    torch = pytest.importorskip("torch")
    _, from_torch = func(dapi, labels=torch.from_numpy(labels))  # labels made by a torch step
    assert from_torch == aligned


@pytest.mark.parametrize("kwargs, error, match", [
    ({"labels_slices": 5}, ValueError, r"labels_slices=5 must be a slice position 0\.\.1"),
    ({"labels_slices": "x"}, TypeError, "labels_slices"),
    ({"labels_slices": 0, "intensity_slices": {"A": 9}}, ValueError, r"intensity_slices\['A'\]"),
    ({"intensity_slices": {"A": 0}}, ValueError, "need labels_slices"),
    ({"labels_slices": 0, "intensity_slices": ["A"]}, TypeError, "mapping"),
    ({"intensity": {"A": np.zeros((1, 4, 4))}}, ValueError, "must match the label stack"),
    ({"pixel_size_um": 0}, ValueError, "pixel_size_um"),
])
def test_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        hf.get("measure_objects")(np.zeros((2, 8, 8), dtype=np.int32), **kwargs)


def test_with_labels_errors():
    func = hf.get("measure_objects_with_labels")
    with pytest.raises(ValueError, match="special output 'labels'"):
        func(np.zeros((1, 8, 8), np.uint16))
    with pytest.raises(ValueError, match="do not match"):
        func(np.zeros((1, 8, 8), np.uint16), labels=np.zeros((1, 9, 8), np.int32))
    with pytest.raises(ValueError, match="slice by slice"):
        func(np.zeros((2, 8, 8), np.uint16), labels=np.zeros((1, 8, 8), np.int32))


def test_default_materializer_and_with_materializers():
    listed = hf.list().set_index("name")
    assert listed.loc["measure_objects", "special_outputs"] == "objects"
    assert listed.loc["measure_objects_with_labels", "memory_types"] == "numpy"
    measure = hf.get("measure_objects")
    assert measure.special_outputs == {"objects": materialize_parquet}
    custom = table_materializer(plate="P07", pipeline="nuclei")
    copy = with_materializers(measure, objects=custom)
    assert copy.special_outputs["objects"] is custom and isinstance(custom, TableMaterializer)
    assert measure.special_outputs["objects"] is materialize_parquet  # the built-in is unchanged
    assert copy.input_memory_type == measure.input_memory_type
    _, rows = copy(np.ones((1, 4, 4), dtype=np.int32))
    assert rows[0]["area"] == 16
    with pytest.raises(ValueError, match="no special output 'tables'"):
        with_materializers(measure, tables=custom)


def test_synthetic_truth_recovered_within_two_percent(tmp_path):
    """Touching nuclei split by watershed; each nucleus' GFP mean within 2% of the drawn truth."""
    import tifffile

    from hcsgraph.plate.synthetic import make_plate

    plate = make_plate(tmp_path / "plate", n_wells=2, sites=2, channels=2, size=(256, 256), seed=4,
                       touching=0.4, known_intensity=True)
    truth = plate.objects
    matched = total = merged_by_label = split_by_watershed = 0
    for (well, site), images in plate.ground_truth.groupby(["well", "site"]):
        dapi, gfp = (tifffile.imread(images[images["channel"] == c]["path"].iloc[0])[None] for c in (1, 2))
        mask = hf.get("fill_holes")(hf.get("threshold_otsu")(hf.get("gaussian_filter")(dapi, sigma=1.0)))
        nuclei = hf.get("remove_small_objects")(hf.get("watershed")(mask, min_distance=3), min_area=15)
        _, rows = hf.get("measure_objects")(nuclei, intensity={"GFP": gfp})
        site_truth = truth[(truth["well"] == well) & (truth["site"] == site)]
        total += len(site_truth)
        merged_by_label += hf.get("label")(mask).max()
        split_by_watershed += len(rows)
        for row in rows:
            distance = np.hypot(site_truth["y"] - row["centroid_y"], site_truth["x"] - row["centroid_x"])
            nearest = site_truth.iloc[int(np.argmin(distance))]
            if distance.min() > 2 or not 0.5 < row["area"] / nearest["area"] < 2:
                continue  # a merge or a fragment, not this nucleus
            matched += 1
            assert row["GFP_mean"] == pytest.approx(nearest["GFP_mean"], rel=0.02), (well, site, nearest["nucleus"])
    assert (truth["pair"] >= 0).mean() > 0.3
    assert merged_by_label < 0.9 * total  # plain labelling merges the pairs
    assert abs(split_by_watershed - total) <= 0.03 * total  # the watershed splits them
    assert matched >= 0.9 * total
