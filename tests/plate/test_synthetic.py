"""Synthetic plates: layouts, ground truth files, determinism, and counts a classic pipeline recovers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from skimage import filters, measure, morphology

from hcsgraph.plate import open_plate, read_plane
from hcsgraph.plate.synthetic import make_plate


def _count(image: np.ndarray) -> int:
    smooth = filters.gaussian(image.astype(np.float64), sigma=1.5, preserve_range=True)
    mask = ndi.binary_opening(smooth > filters.threshold_otsu(smooth), structure=morphology.disk(2))
    return int(measure.label(mask).max())


def test_counts_recovered_within_ten_percent(tmp_path):
    plate = make_plate(tmp_path / "p", n_wells=4, sites=2, channels=1, size=(256, 256), seed=3)
    truth = plate.ground_truth
    assert len(truth) == 8 and truth["count"].min() > 5
    for row in truth.itertuples():
        found = _count(read_plane(row.path))
        assert abs(found - row.count) <= max(1, 0.1 * row.count), (row.well, row.site, found, row.count)
    assert truth.groupby("well")["count"].mean().nunique() > 1  # wells differ


def test_imagexpress_layout_opens_and_matches_ground_truth(tmp_path):
    plate = make_plate(tmp_path / "ix", wells=["B02", "H12"], sites=3, channels=2, z=2, t=2, size=64,
                       dtype="uint8", seed=1)
    index = open_plate(plate.path)
    assert index.source_format == "imagexpress" and index.name == "SynthPlate"
    assert index.wells == ["B02", "H12"] and index.sites == [1, 2, 3]
    assert index.z_planes == [1, 2] and index.timepoints == [1, 2]
    assert index.channel_names == {1: "DAPI", 2: "GFP"}
    assert index.dtype == np.uint8 and index.image_shape == (64, 64)
    assert index.gaps.empty and index.unrecognized == []
    merged = index.table.merge(plate.ground_truth, on=["well", "site", "channel", "z", "t"], suffixes=("", "_gt"))
    assert len(merged) == len(index) == 2 * 3 * 2 * 2 * 2
    assert (merged["path"] == merged["path_gt"]).all()


def test_operaphenix_layout_and_files_beside(tmp_path):
    plate = make_plate(tmp_path / "op", layout="operaphenix", n_wells=3, sites=2, channels=3, size=48,
                       plate_format=384, pixel_size_um=0.5)
    index = open_plate(plate.path)
    assert index.source_format == "operaphenix"
    assert index.wells == ["A01", "A02", "A03"]
    assert index.channel_names == {1: "DAPI", 2: "GFP", 3: "RFP"}
    assert index.pixel_size_um == pytest.approx(0.5)
    csv = pd.read_csv(plate.path / "ground_truth.csv")
    assert csv["count"].tolist() == plate.ground_truth["count"].tolist()
    meta = json.loads((plate.path / "ground_truth.json").read_text())
    assert len(meta["images"]) == len(index) and meta["dtype"] == "uint16"


def test_deterministic_per_seed_and_realistic(tmp_path):
    a = make_plate(tmp_path / "a", wells=["A01"], sites=1, channels=1, size=96, seed=7)
    b = make_plate(tmp_path / "b", wells=["A01"], sites=1, channels=1, size=96, seed=7)
    c = make_plate(tmp_path / "c", wells=["A01"], sites=1, channels=1, size=96, seed=8)
    img_a, img_b, img_c = (read_plane(p.ground_truth["path"][0]) for p in (a, b, c))
    np.testing.assert_array_equal(img_a, img_b)
    assert not np.array_equal(img_a, img_c)
    assert img_a.dtype == np.uint16
    background = np.percentile(img_a, 5)
    assert 50 < background < 200  # an offset, not zero
    assert img_a.max() > 5 * background
    assert len(np.unique(img_a[img_a < np.percentile(img_a, 20)])) > 10  # noise, not a flat floor


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="outside a 96-well"):
        make_plate(tmp_path / "x", wells=["P24"])
    with pytest.raises(ValueError, match="layout"):
        make_plate(tmp_path / "y", layout="nikon")
    make_plate(tmp_path / "z", wells=["A01"], sites=1, channels=1, size=32)
    with pytest.raises(FileExistsError, match="not empty"):
        make_plate(tmp_path / "z", wells=["A01"], sites=1, channels=1, size=32)


def test_touching_pairs_and_known_intensity_truth(tmp_path):
    from hcsgraph.plate.synthetic import GROUND_TRUTH_OBJECTS_CSV, PAIR_OVERLAP

    plate = make_plate(tmp_path / "obj", n_wells=2, sites=2, channels=3, size=(192, 192), seed=5, touching=0.4,
                       known_intensity=True)
    objects = plate.objects
    pd.testing.assert_frame_equal(pd.read_csv(plate.path / GROUND_TRUTH_OBJECTS_CSV), objects, check_dtype=False)
    assert list(objects.columns) == ["well", "site", "nucleus", "pair", "y", "x", "radius_y", "radius_x", "angle",
                                     "z", "area", "DAPI_mean", "GFP_mean", "RFP_mean"]
    per_site = objects.groupby(["well", "site"]).size().rename("count").reset_index()
    pd.testing.assert_frame_equal(per_site, plate.counts())
    paired = objects[objects["pair"] >= 0]
    assert 0.3 <= len(paired) / len(objects) <= 0.5
    for _, two in paired.groupby(["well", "site", "pair"]):
        a, b = two.iloc[0], two.iloc[1]
        assert np.hypot(a.y - b.y, a.x - b.x) == pytest.approx((1 - PAIR_OVERLAP) * (a.radius_y + b.radius_y))
        assert a.radius_y == a.radius_x  # pairs are round
        assert b.GFP_mean == pytest.approx(a.GFP_mean, rel=0.2)  # partners' levels within 15% (+ background)
    # the channels after the first are flat per nucleus: a disk well inside a single nucleus has its mean
    images = plate.ground_truth
    gfp = read_plane(images[(images.well == "A01") & (images.site == 1) & (images.channel == 2)]["path"].iloc[0])
    yy, xx = np.mgrid[: gfp.shape[0], : gfp.shape[1]]
    singles = objects[(objects.well == "A01") & (objects.site == 1) & (objects.pair < 0)]
    for row in singles.itertuples():
        inside = np.hypot(yy - row.y, xx - row.x) < 0.6 * row.radius_x
        assert gfp[inside].mean() == pytest.approx(row.GFP_mean, rel=0.03)
    assert objects["GFP_mean"].std() > 0.2 * objects["GFP_mean"].mean()  # levels vary between nuclei


def test_object_options_leave_default_plates_alone(tmp_path):
    plain = make_plate(tmp_path / "a", wells=["A01"], sites=1, channels=2, size=64, seed=9)
    assert plain.objects is None and not (plain.path / "ground_truth_objects.csv").exists()
    with_truth = make_plate(tmp_path / "b", wells=["A01"], sites=1, channels=2, size=64, seed=9, known_intensity=True)
    # the same nuclei (the noise differs: the levels are drawn from the same generator); one truth row each
    assert with_truth.ground_truth["count"].tolist() == plain.ground_truth["count"].tolist()
    assert len(with_truth.objects) == plain.ground_truth["count"][0]
    with pytest.raises(ValueError, match="touching"):
        make_plate(tmp_path / "c", wells=["A01"], touching=1.5)
