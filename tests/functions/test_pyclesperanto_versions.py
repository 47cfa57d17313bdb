"""The pyclesperanto versions (OpenCL, PoCL on the CPU here) agree with the numpy versions.

pyclesperanto clamps at the image border and uses its own Gaussian kernel, so filters are
compared away from the border (8 pixels): float Gaussian within 1e-4 of the value range,
integer Gaussian within 1 grey level. Median, top-hat, opening, projections and labels are exact.
OpenCL has no bool type: masks come back as uint8 0/1.
"""

from __future__ import annotations

import numpy as np
import pytest

import hcsgraph.functions as hf

INNER = (slice(None), slice(8, -8), slice(8, -8))


def run_cle(cle, name, stack, **kwargs):
    return np.asarray(cle.pull(hf.get(name, "pyclesperanto")(cle.push(np.ascontiguousarray(stack)), **kwargs)))


def test_gaussian_close_inside(cle, blobs, blobs_float):
    got = run_cle(cle, "gaussian_filter", blobs_float, sigma=2.0)
    expected = hf.get("gaussian_filter")(blobs_float, sigma=2.0)
    np.testing.assert_allclose(got[INNER], expected[INNER], atol=1e-4 * float(np.ptp(blobs_float)), rtol=0)
    got_int = run_cle(cle, "gaussian_filter", blobs, sigma=2.0)
    assert got_int.dtype == np.uint16
    diff = np.abs(got_int.astype(int) - hf.get("gaussian_filter")(blobs, sigma=2.0).astype(int))
    assert diff[INNER].max() <= 1


def test_median_and_top_hat_exact(cle, blobs):
    np.testing.assert_array_equal(run_cle(cle, "median_filter", blobs), hf.get("median_filter")(blobs))
    for shape in ("square", "disk"):
        got = run_cle(cle, "background_subtract", blobs, radius=5, shape=shape)
        assert got.dtype == np.uint16
        np.testing.assert_array_equal(got, hf.get("background_subtract")(blobs, radius=5, shape=shape))
    with pytest.raises(ValueError, match="odd size"):
        hf.get("median_filter", "pyclesperanto")(cle.push(blobs), size=4)


def test_threshold_opening_label_agree(cle, blobs, blob_counts):
    mask = run_cle(cle, "threshold_otsu", blobs)
    assert mask.dtype == np.uint8
    # its own 256-bin histogram: a few noise pixels next to the threshold may differ
    assert np.mean(mask.astype(bool) != hf.get("threshold_otsu")(blobs)) < 1e-3
    opened = run_cle(cle, "binary_opening", mask, radius=2)
    assert opened.dtype == np.uint8
    expected = hf.get("binary_opening")(mask.astype(bool), radius=2)
    np.testing.assert_array_equal(opened.astype(bool), expected)
    for connectivity in (1, 2):
        labels = run_cle(cle, "label", opened, connectivity=connectivity)
        ref = hf.get("label")(expected, connectivity=connectivity)
        assert labels.dtype == np.int32
        for z in range(labels.shape[0]):
            # the same objects, possibly numbered differently: a one-to-one map between labels
            pairs = set(zip(labels[z].ravel(), ref[z].ravel(), strict=True))
            assert len(pairs) == len(np.unique(labels[z])) == len(np.unique(ref[z]))
    _, counts = hf.get("count_cells")(run_cle(cle, "label", opened))
    assert [c["cell_count"] for c in counts] == list(blob_counts)


def test_projections(cle, blobs):
    mx = run_cle(cle, "max_projection", blobs)
    assert mx.shape == (1, *blobs.shape[1:]) and mx.dtype == np.uint16
    np.testing.assert_array_equal(mx, hf.get("max_projection")(blobs))
    mean = run_cle(cle, "mean_projection", blobs)
    assert mean.shape == (1, *blobs.shape[1:]) and mean.dtype == np.float32
    np.testing.assert_allclose(mean, hf.get("mean_projection")(blobs), rtol=1e-5)
