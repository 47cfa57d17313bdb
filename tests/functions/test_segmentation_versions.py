"""torch and pyclesperanto versions of the segmentation functions against numpy.

Tolerances: torch ``remove_small_objects``, ``remove_large_objects``, ``clear_border`` are exact
(masks and labels); torch ``threshold_local`` is exact here and may differ from scikit-image only on
pixels within 1e-9 of the threshold (another summation order). pyclesperanto ``remove_*`` and
``clear_border`` are exact on label images. pyclesperanto ``expand_labels`` dilates by a radius
instead of a Euclidean distance (its cells come out 3-10% larger): on separate nuclei (radius 6-10,
expanded by 5) at least 95% of the pixels agree, every cell overlaps its numpy cell with an IoU of
0.85 or more and its area is within 15%.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

import hcsgraph.functions as hf

from .test_segmentation import disks

FILTERS = [("remove_small_objects", {"min_area": 60}), ("remove_large_objects", {"max_area": 100}),
           ("clear_border", {}), ("clear_border", {"buffer_size": 4})]


def nuclei(shape=(128, 128), seed=0, z=2) -> np.ndarray:
    """int32 labels of separate disks of radius 6-10, 8+ pixels apart."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((z, *shape), dtype=np.int32)
    value = 1
    for plane in labels:
        centres: list[tuple[int, int, int]] = []
        for _ in range(300):
            cy, cx, r = rng.integers(12, shape[0] - 12), rng.integers(12, shape[1] - 12), rng.integers(6, 11)
            if all(np.hypot(cy - y, cx - x) > r + q + 8 for y, x, q in centres):
                centres.append((cy, cx, r))
                rr, cc = disk((cy, cx), r, shape=shape)
                plane[rr, cc] = value
                value += 1
    return labels


# ----------------------------------------------------------------------------------------- torch


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("name, kwargs", FILTERS)
def test_torch_filters_exact(torch, name, kwargs):
    labels = disks(seed=7)
    for stack in (labels, labels > 0, labels.astype(np.uint16)):
        got = hf.get(name, "torch")(torch.from_numpy(stack), **kwargs)
        assert isinstance(got, torch.Tensor)
        expected = hf.get(name)(stack, **kwargs)
        assert got.numpy().dtype == expected.dtype
        np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("method", ["gaussian", "mean"])
def test_torch_threshold_local(torch, blobs, blobs_float, method):
    for stack in (blobs, blobs_float):
        got = hf.get("threshold_local", "torch")(torch.from_numpy(stack), block_size=31, offset=5.0, method=method)
        assert got.dtype == torch.bool
        expected = hf.get("threshold_local")(stack, block_size=31, offset=5.0, method=method)
        assert np.mean(got.numpy() != expected) <= 1e-4


# --------------------------------------------------------------------------------- pyclesperanto


def run_cle(cle, name, stack, **kwargs):
    return np.asarray(cle.pull(hf.get(name, "pyclesperanto")(cle.push(np.ascontiguousarray(stack)), **kwargs)))


@pytest.mark.parametrize("name, kwargs", FILTERS[:3])
def test_cle_filters_exact_on_labels(cle, name, kwargs):
    labels = disks(seed=8)
    for stack in (labels, labels.astype(np.uint16)):
        got = run_cle(cle, name, stack, **kwargs)
        assert got.dtype == stack.dtype
        np.testing.assert_array_equal(got, hf.get(name)(stack, **kwargs))


def test_cle_clear_border_buffer_unsupported(cle):
    with pytest.raises(ValueError, match="buffer_size=0"):
        hf.get("clear_border", "pyclesperanto")(cle.push(disks()), buffer_size=2)
    with pytest.raises(TypeError, match="integer label image"):
        hf.get("remove_small_objects", "pyclesperanto")(cle.push(np.zeros((1, 8, 8), np.float32)))


def test_cle_expand_labels_close(cle):
    labels = nuclei()
    got = run_cle(cle, "expand_labels", labels, distance=5)
    expected = hf.get("expand_labels")(labels, distance=5)
    assert got.dtype == np.int32
    assert np.mean(got == expected) >= 0.95
    np.testing.assert_array_equal(np.unique(got), np.unique(expected))
    got_areas, expected_areas = np.bincount(got.ravel()), np.bincount(expected.ravel())
    present = np.flatnonzero(expected_areas)[1:]
    np.testing.assert_allclose(got_areas[present], expected_areas[present], rtol=0.15)
    both = np.bincount(got[got == expected].ravel(), minlength=len(expected_areas))[present]
    iou = both / (got_areas[present] + expected_areas[present] - both)
    assert iou.min() >= 0.85
    # the nuclei themselves are never changed
    np.testing.assert_array_equal(got[labels != 0], labels[labels != 0])
