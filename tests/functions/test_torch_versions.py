"""The torch versions agree with the numpy versions (run on the CPU).

Tolerances: float Gaussian within 1e-4 of the value range (float32 vs float64 accumulation),
integer Gaussian within 1 grey level (scipy truncates after each axis; a sum that lands next to
an integer may fall either side). Everything else is exact.
"""

from __future__ import annotations

import numpy as np
import pytest

import hcsgraph.functions as hf

torch = pytest.importorskip("torch")


def run_torch(name, stack, **kwargs):
    out = hf.get(name, "torch")(torch.from_numpy(np.ascontiguousarray(stack)), **kwargs)
    assert isinstance(out, torch.Tensor)
    return out.numpy()


@pytest.mark.parametrize("sigma", [1.0, 2.0, (0.5, 3.0)])
def test_gaussian_close_to_scipy(blobs, blobs_float, sigma):
    expected = hf.get("gaussian_filter")(blobs_float, sigma=sigma)
    got = run_torch("gaussian_filter", blobs_float, sigma=sigma)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-4 * float(np.ptp(blobs_float)), rtol=0)
    expected_int = hf.get("gaussian_filter")(blobs, sigma=sigma)
    got_int = run_torch("gaussian_filter", blobs, sigma=sigma)
    assert got_int.dtype == np.uint16
    assert np.abs(got_int.astype(int) - expected_int.astype(int)).max() <= 1


@pytest.mark.parametrize("size", [3, 4, 5])
def test_median_exact(blobs, size):
    np.testing.assert_array_equal(run_torch("median_filter", blobs, size=size), hf.get("median_filter")(blobs, size=size))


@pytest.mark.parametrize("shape", ["square", "disk"])
def test_background_subtract_exact(blobs, blobs_float, shape):
    for stack in (blobs, blobs_float):
        got = run_torch("background_subtract", stack, radius=7, shape=shape)
        expected = hf.get("background_subtract")(stack, radius=7, shape=shape)
        assert got.dtype == stack.dtype
        np.testing.assert_array_equal(got, expected)


def test_threshold_otsu_exact(blobs, blobs_float):
    for stack in (blobs, blobs_float):
        got = run_torch("threshold_otsu", stack)
        assert got.dtype == bool
        np.testing.assert_array_equal(got, hf.get("threshold_otsu")(stack))


@pytest.mark.parametrize("kwargs", [{"radius": 1}, {"radius": 3}, {"radius": 2, "shape": "square"},
                                    {"footprint": np.array([[0, 1, 0], [1, 1, 1], [0, 1, 1]])}])
def test_binary_opening_exact(blobs, kwargs):
    mask = hf.get("threshold_otsu")(blobs)
    got = run_torch("binary_opening", mask, **kwargs)
    assert got.dtype == bool
    np.testing.assert_array_equal(got, hf.get("binary_opening")(mask, **kwargs))


def test_projections_exact(blobs):
    for name in ("max_projection", "mean_projection"):
        got = run_torch(name, blobs)
        expected = hf.get(name)(blobs)
        assert got.shape == expected.shape == (1, *blobs.shape[1:])
        assert got.dtype == expected.dtype
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert hf.get("max_projection", "torch").oom_splittable is False
