"""The numpy versions on synthetic blobs: values, dtypes, shapes and errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import hcsgraph.functions as hf


def segment(stack: np.ndarray) -> np.ndarray:
    """The demo chain: blur, background subtraction, Otsu, opening."""
    smooth = hf.get("gaussian_filter")(stack, sigma=1.0)
    flat = hf.get("background_subtract")(smooth, radius=15)
    mask = hf.get("threshold_otsu")(flat)
    return hf.get("binary_opening")(mask, radius=2)


def test_count_cells_recovers_the_drawn_blobs(blobs, blob_counts):
    mask = segment(blobs)
    out, counts = hf.get("count_cells")(mask)
    assert out is mask or np.array_equal(out, mask)
    assert [c["cell_count"] for c in counts] == list(blob_counts)
    assert [c["slice_index"] for c in counts] == [0, 1, 2]
    assert set(counts[2]) == {"slice_index", "cell_count", "total_area", "mean_area"}
    # every blob has radius 5-8: area between those of the disks
    assert all(60 < c["mean_area"] < 230 for c in counts)


def test_count_cells_on_labels_and_min_area():
    labels = np.zeros((2, 20, 20), dtype=np.int32)
    labels[0, 1:3, 1:3] = 5  # 4 pixels
    labels[0, 10:15, 10:15] = 9  # 25 pixels
    labels[1, 0, 0] = 1
    _, counts = hf.get("count_cells")(labels)
    assert [c["cell_count"] for c in counts] == [2, 1]
    assert counts[0]["total_area"] == 29
    _, counts = hf.get("count_cells")(labels, min_area=5)
    assert [c["cell_count"] for c in counts] == [1, 0]


def test_count_cells_rejects_a_grey_image(blobs_float):
    with pytest.raises(TypeError, match="count_cells.*float32"):
        hf.get("count_cells")(blobs_float)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_filters_keep_dtype_and_shape(make_blobs, dtype):
    stack = make_blobs(dtype=np.float64)
    stack = (stack / stack.max() * 250).astype(dtype)
    for name, kwargs in [("gaussian_filter", {}), ("median_filter", {}), ("background_subtract", {"radius": 5})]:
        out = hf.get(name)(stack, **kwargs)
        assert out.dtype == np.dtype(dtype), name
        assert out.shape == stack.shape, name


def test_gaussian_matches_scipy_per_plane_including_integer_truncation(blobs):
    out = hf.get("gaussian_filter")(blobs, sigma=2.0)
    for z in range(blobs.shape[0]):
        np.testing.assert_array_equal(out[z], ndimage.gaussian_filter(blobs[z], 2.0))
    # planes are filtered independently: no blur along Z
    single = hf.get("gaussian_filter")(blobs[1:2], sigma=2.0)
    np.testing.assert_array_equal(out[1:2], single)
    anisotropic = hf.get("gaussian_filter")(blobs, sigma=(0.0, 3.0))
    np.testing.assert_array_equal(anisotropic[0], ndimage.gaussian_filter(blobs[0], (0.0, 3.0)))


def test_median_removes_salt_noise():
    stack = np.full((1, 9, 9), 10, dtype=np.uint16)
    stack[0, 4, 4] = 60000
    out = hf.get("median_filter")(stack, size=3)
    assert np.all(out == 10)


def test_background_subtract_flattens_a_slope():
    yy, xx = np.mgrid[:64, :64]
    slope = (100 + xx + yy).astype(np.uint16)
    stack = slope[np.newaxis].copy()
    stack[0, 30:34, 30:34] += 500
    out = hf.get("background_subtract")(stack, radius=6)
    assert out.dtype == np.uint16
    assert out[0, 31, 31] >= 490
    assert out[0, :20, :20].max() <= 12  # a slope of 2 per pixel under a 13-pixel square
    disk_out = hf.get("background_subtract")(stack, radius=6, shape="disk")
    assert disk_out[0, 31, 31] >= 490 and (disk_out >= 0).all()


def test_threshold_otsu_is_a_bool_mask_per_plane(blobs):
    mask = hf.get("threshold_otsu")(blobs)
    assert mask.dtype == bool and mask.shape == blobs.shape
    assert not mask[2].all()
    # plane 0 has the blobs: their centres are foreground, corners background
    assert mask[0].sum() > 7 * 60
    constant = np.full((1, 8, 8), 7, dtype=np.uint16)
    assert not hf.get("threshold_otsu")(constant).any()


def test_binary_opening_removes_specks_keeps_blobs():
    mask = np.zeros((1, 40, 40), dtype=bool)
    mask[0, 5:15, 5:15] = True
    mask[0, 30, 30] = True
    mask[0, 0:8, 32:40] = True  # touches the top and right borders
    out = hf.get("binary_opening")(mask, radius=2)
    assert out.dtype == bool
    assert not out[0, 30, 30]
    assert out[0, 5:15, 5:15].sum() > 80
    # the image border does not erode it: its pixels along the border survive
    assert out[0, 0, 32:40].all() and out[0, 0:6, 39].all()
    square = hf.get("binary_opening")(mask, footprint=np.ones((3, 3)))
    np.testing.assert_array_equal(square[0, 5:15, 5:15], mask[0, 5:15, 5:15])
    with pytest.raises(ValueError, match="binary_opening.*odd"):
        hf.get("binary_opening")(mask, footprint=np.ones((2, 2)))


@pytest.mark.parametrize("connectivity, expected", [(1, 2), (2, 1)])
def test_label_connectivity(connectivity, expected):
    mask = np.zeros((2, 6, 6), dtype=bool)
    mask[0, 1, 1] = mask[0, 2, 2] = True  # diagonal neighbours
    mask[1, 0:2, 0:2] = True
    labels = hf.get("label")(mask, connectivity=connectivity)
    assert labels.dtype == np.int32
    assert labels[0].max() == expected
    assert labels[1].max() == 1  # each plane starts again at 1
    with pytest.raises(ValueError, match="connectivity"):
        hf.get("label")(mask, connectivity=3)


def test_projections(blobs):
    mx = hf.get("max_projection")(blobs)
    assert mx.shape == (1, *blobs.shape[1:]) and mx.dtype == np.uint16
    np.testing.assert_array_equal(mx[0], blobs.max(axis=0))
    mean = hf.get("mean_projection")(blobs)
    assert mean.shape == (1, *blobs.shape[1:]) and mean.dtype == np.float32
    np.testing.assert_allclose(mean[0], blobs.mean(axis=0), rtol=1e-6)
    as_float64 = hf.get("mean_projection")(blobs.astype(np.float64))
    assert as_float64.dtype == np.float64
    assert hf.get("max_projection").oom_splittable is False
    assert hf.get("mean_projection").oom_splittable is False
    assert hf.get("gaussian_filter").oom_splittable is True


@pytest.mark.parametrize(
    "name", ["gaussian_filter", "median_filter", "threshold_otsu", "label", "max_projection", "count_cells"]
)
def test_a_2d_image_is_rejected_with_the_function_name(name):
    with pytest.raises(ValueError, match=rf"{name}: expected a \[Z, Y, X\] stack"):
        hf.get(name)(np.zeros((8, 8), dtype=bool))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_threshold_otsu_matches_scikit_image(dtype):
    from skimage.filters import threshold_otsu as skimage_otsu

    rng = np.random.default_rng(3)
    stack = np.concatenate([rng.normal(90, 12, (3, 48, 48)), rng.normal(200, 20, (3, 48, 48))], axis=2)
    if dtype == np.int16:
        stack -= 150  # negative grey levels take scikit-image's own path
    stack = np.clip(stack, np.iinfo(dtype).min if np.dtype(dtype).kind in "ui" else -1e9, 255).astype(dtype)
    mask = hf.get("threshold_otsu")(stack)
    for z, plane in enumerate(stack):
        np.testing.assert_array_equal(mask[z], plane > skimage_otsu(plane))


def test_label_numbers_objects_as_scikit_image(blobs):
    from skimage.measure import label as skimage_label

    mask = segment(blobs)
    for connectivity in (1, 2):
        labels = hf.get("label")(mask, connectivity=connectivity)
        for z, plane in enumerate(mask):
            np.testing.assert_array_equal(labels[z], skimage_label(plane, connectivity=connectivity))
    grey = np.where(mask, blobs, 0)  # any nonzero value is foreground
    np.testing.assert_array_equal(hf.get("label")(grey), hf.get("label")(mask))


@pytest.mark.parametrize("dtype", [np.int32, np.uint32, np.int64, np.uint64])
def test_count_cells_with_sparse_and_wide_labels(dtype):
    labels = np.zeros((1, 16, 16), dtype=dtype)
    labels[0, :2, :2] = np.iinfo(dtype).max  # far beyond the pixel count: counted by sorting
    labels[0, 5:8, 5:8] = 3
    labels[0, 10, 10] = 7
    _, counts = hf.get("count_cells")(labels)
    assert counts[0]["cell_count"] == 3
    assert counts[0]["total_area"] == 4 + 9 + 1
    _, counts = hf.get("count_cells")(labels, min_area=4)
    assert (counts[0]["cell_count"], counts[0]["total_area"]) == (2, 13)
