"""Segmentation functions (numpy): values against scikit-image/scipy, kinds, dtypes and errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage import filters, segmentation
from skimage.draw import disk

import hcsgraph.functions as hf


def disks(shape=(96, 96), n=25, seed=0, z=2, radii=(2, 9)) -> np.ndarray:
    """int32 labels: ``n`` disks per plane, later ones drawn over earlier ones (so some touch)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((z, *shape), dtype=np.int32)
    value = 1
    for plane in labels:
        for _ in range(n):
            cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
            rr, cc = disk((cy, cx), rng.integers(*radii), shape=shape)
            plane[rr, cc] = value
            value += 1
    return labels


def pair_of_touching_disks(shape=(64, 96), r1=12, r2=9, overlap=3) -> np.ndarray:
    mask = np.zeros((1, *shape), dtype=bool)
    cy = shape[0] // 2
    rr, cc = disk((cy, 25), r1, shape=shape)
    mask[0, rr, cc] = True
    rr, cc = disk((cy, 25 + r1 + r2 - overlap), r2, shape=shape)
    mask[0, rr, cc] = True
    return mask


# ------------------------------------------------------------------------------------ watershed


def test_watershed_splits_touching_disks():
    mask = pair_of_touching_disks()
    assert ndimage.label(mask[0])[1] == 1  # one connected object
    labels = hf.get("watershed")(mask, min_distance=5)
    assert labels.dtype == np.int32 and labels.shape == mask.shape
    assert sorted(np.unique(labels)) == [0, 1, 2]
    np.testing.assert_array_equal(labels != 0, mask)
    # the split follows the neck: each disk's centre lies in its own object, the areas are the disks'
    assert labels[0, 32, 25] != labels[0, 32, 25 + 12 + 9 - 3]
    areas = sorted(np.bincount(labels.ravel())[1:])
    assert areas[0] == pytest.approx(np.pi * 9**2, rel=0.15) and areas[1] == pytest.approx(np.pi * 12**2, rel=0.15)
    # numbered in raster order of the first pixel: the left (larger, higher) disk is 1
    assert labels[0, 32, 25] == 1


def test_watershed_keeps_label_boundaries_and_separate_objects():
    labels = disks(n=12, seed=3, radii=(5, 9))
    out = hf.get("watershed")(labels, min_distance=3)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out != 0, labels != 0)
    for z in range(labels.shape[0]):
        # every output object lies inside exactly one input label
        pairs = {(a, b) for a, b in zip(out[z].ravel(), labels[z].ravel(), strict=True) if a}
        assert len({a for a, _ in pairs}) == len(pairs)
        assert out[z].max() >= len(np.unique(labels[z])) - 1
        assert sorted(np.unique(out[z]))[1:] == list(range(1, out[z].max() + 1))  # 1..N


def test_watershed_of_empty_and_single_pixel_objects():
    stack = np.zeros((2, 16, 16), dtype=bool)
    stack[1, 3, 3] = True
    stack[1, 8, 2:14] = True  # a one-pixel-wide line
    out = hf.get("watershed")(stack)
    assert out[0].max() == 0
    np.testing.assert_array_equal(out[1] != 0, stack[1])
    assert out[1].max() >= 2


# ---------------------------------------------------------------------- area, border, holes


def test_remove_small_and_large_objects_on_labels():
    labels = disks()
    areas = np.bincount(labels.ravel())
    small = hf.get("remove_small_objects")(labels, min_area=60)
    assert small.dtype == labels.dtype
    kept = set(np.unique(small)) - {0}
    assert kept == {v for v in np.unique(labels) if v and areas[v] >= 60}
    np.testing.assert_array_equal(small[small != 0], labels[small != 0])  # numbers unchanged
    large = hf.get("remove_large_objects")(labels, max_area=100)
    assert set(np.unique(large)) - {0} == {v for v in np.unique(labels) if v and areas[v] <= 100}


def test_remove_small_objects_on_a_mask_matches_scikit_image():
    from skimage.morphology import remove_small_objects as skimage_remove

    mask = disks(seed=5) > 0
    for connectivity in (1, 2):
        out = hf.get("remove_small_objects")(mask, min_area=50, connectivity=connectivity)
        assert out.dtype == bool
        for z, plane in enumerate(mask):
            # scikit-image removes objects of max_size pixels or fewer: keep >= 50 means max_size=49
            np.testing.assert_array_equal(out[z], skimage_remove(plane, max_size=49, connectivity=connectivity))


def test_clear_border_matches_scikit_image():
    labels = disks(seed=2)
    for buffer_size in (0, 3):
        out = hf.get("clear_border")(labels, buffer_size=buffer_size)
        for z, plane in enumerate(labels):
            # disks are connected, so removing by label equals scikit-image's connected removal
            np.testing.assert_array_equal(out[z], segmentation.clear_border(plane, buffer_size=buffer_size))
    mask = labels > 0
    out = hf.get("clear_border")(mask, connectivity=2)
    assert out.dtype == bool
    for z, plane in enumerate(mask):
        np.testing.assert_array_equal(out[z], segmentation.clear_border(plane))
    with pytest.raises(ValueError, match="buffer_size"):
        hf.get("clear_border")(labels, buffer_size=200)


def test_clear_border_removes_a_whole_label():
    labels = np.zeros((1, 10, 10), dtype=np.uint16)
    labels[0, 0, 0] = 7
    labels[0, 5, 5] = 7  # the same label, not touching the border
    labels[0, 4:6, 7:9] = 3
    out = hf.get("clear_border")(labels)
    assert set(np.unique(out)) == {0, 3}


def test_fill_holes_mask_and_labels():
    mask = np.zeros((1, 20, 30), dtype=bool)
    mask[0, 2:12, 2:12] = True
    mask[0, 5:8, 5:8] = False  # a hole
    mask[0, 2:12, 15:25] = True
    mask[0, 0:4, 27:30] = True
    out = hf.get("fill_holes")(mask)
    assert out.dtype == bool
    np.testing.assert_array_equal(out[0], ndimage.binary_fill_holes(mask[0]))
    labels = np.zeros((1, 20, 30), dtype=np.int32)
    labels[0, 2:12, 2:12] = 1
    labels[0, 5:8, 5:8] = 0  # a hole in object 1
    labels[0, 2:12, 15:25] = 2
    labels[0, 6, 19] = 0  # a hole in object 2
    labels[0, 14:19, 2:9] = 3
    labels[0, 14:19, 9:16] = 4
    labels[0, 16, 8:10] = 0  # background enclosed by objects 3 and 4 together
    filled = hf.get("fill_holes")(labels)
    assert filled.dtype == np.int32
    assert (filled[0, 5:8, 5:8] == 1).all() and filled[0, 6, 19] == 2
    # a hole shared by two objects is no object's own hole: it stays background
    assert (filled[0, 16, 8:10] == 0).all()
    np.testing.assert_array_equal(filled[labels != 0], labels[labels != 0])


def test_expand_labels_matches_scikit_image():
    labels = disks(seed=4, radii=(3, 7))
    for distance in (0, 2, 5.5):
        out = hf.get("expand_labels")(labels, distance=distance)
        assert out.dtype == np.int32
        for z, plane in enumerate(labels):
            np.testing.assert_array_equal(out[z], segmentation.expand_labels(plane, distance=distance))
    from_mask = hf.get("expand_labels")(labels > 0, distance=2)
    assert from_mask.dtype == np.int32 and from_mask.max() > 0
    with pytest.raises(ValueError, match="distance"):
        hf.get("expand_labels")(labels, distance=-1)


# ------------------------------------------------------------------------------ threshold_local


@pytest.mark.parametrize("method", ["gaussian", "mean"])
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_threshold_local_matches_scikit_image(blobs, method, dtype):
    stack = blobs.astype(dtype)
    out = hf.get("threshold_local")(stack, block_size=31, offset=5.0, method=method)
    assert out.dtype == bool and out.shape == stack.shape
    for z, plane in enumerate(stack):
        np.testing.assert_array_equal(out[z], plane > filters.threshold_local(plane, 31, method=method, offset=5.0))


def test_threshold_local_errors(blobs):
    with pytest.raises(ValueError, match="block_size=30 must be odd"):
        hf.get("threshold_local")(blobs, block_size=30)
    with pytest.raises(ValueError, match="method"):
        hf.get("threshold_local")(blobs, method="median")


# ------------------------------------------------------------------------ registry and errors


def test_declared_dtypes_and_kinds():
    from hcsgraph.pipeline.compiler import _dtype_after

    u16, i32, b = np.dtype("uint16"), np.dtype("int32"), np.dtype(bool)
    assert _dtype_after(hf.get("watershed"), b, {}, {}) == i32
    assert _dtype_after(hf.get("watershed", "numpy"), u16, {}, {}) == i32
    assert _dtype_after(hf.get("threshold_local"), u16, {}, {}) == b
    assert _dtype_after(hf.get("expand_labels"), b, {}, {}) == i32
    assert _dtype_after(hf.get("expand_labels"), np.dtype("uint16"), {}, {}) == u16
    for name in ("remove_small_objects", "remove_large_objects", "clear_border", "fill_holes"):
        assert _dtype_after(hf.get(name), b, {}, {}) == b
        assert _dtype_after(hf.get(name), i32, {}, {}) == i32
    for name in ("watershed", "remove_small_objects", "remove_large_objects", "clear_border", "fill_holes",
                 "expand_labels", "threshold_local"):
        for memory_type in hf.available_memory_types(name):
            assert hf.get(name, memory_type).image_kind == "labels", (name, memory_type)
    assert hf.get("measure_objects").image_kind == "intensity"


@pytest.mark.parametrize("name", ["watershed", "remove_small_objects", "remove_large_objects", "clear_border",
                                  "fill_holes", "expand_labels"])
def test_labels_functions_reject_floats_and_negatives(name):
    with pytest.raises(TypeError, match=f"{name}: expected a bool mask or an integer label image"):
        hf.get(name)(np.zeros((1, 8, 8), dtype=np.float32))
    bad = np.zeros((1, 8, 8), dtype=np.int32)
    bad[0, 0, 0] = -1
    with pytest.raises(ValueError, match="negative"):
        hf.get(name)(bad)
    with pytest.raises(ValueError, match=rf"{name}: expected a \[Z, Y, X\] stack"):
        hf.get(name)(np.zeros((8, 8), dtype=bool))


def test_empty_stacks_pass():
    for name in ("watershed", "remove_small_objects", "clear_border", "fill_holes", "expand_labels"):
        out = hf.get(name)(np.zeros((0, 8, 8), dtype=np.int32))
        assert out.shape == (0, 8, 8)
