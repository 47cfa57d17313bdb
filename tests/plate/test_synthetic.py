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
