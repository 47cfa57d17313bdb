"""OME-Zarr plates: label pyramids, channel windows from the data, permissions, safe overwrite."""

from __future__ import annotations

import json
import os
import stat
import time
import warnings

import numpy as np
import pytest
import zarr
from scipy import ndimage

from hcsgraph.config import ZarrConfig
from hcsgraph.io.omezarr import (
    create_plate,
    current_umask,
    downsample_2x,
    initial_window,
    is_hcsgraph_plate,
    set_channel_windows,
    write_plane,
    write_planes,
)
from hcsgraph.io.paths import TEMP_PREFIX

WELLS = ["A01", "B03", "H12"]


def _plate(path, *, version="0.5", dtype="int32", shape=(1, 2, 1, 16, 16), wells=WELLS, fields=2, n_levels=1):
    return create_plate(path, plate_name="p", wells=wells, fields=fields, shape_tczyx=shape, dtype=dtype,
                        channel_names=["DAPI", "mask"][: shape[1]], zarr_config=ZarrConfig(ome_zarr_version=version),
                        n_levels=n_levels, overwrite=True)


def _image_attrs(path, group: str, version: str) -> dict:
    attrs = dict(zarr.open_group(path, mode="r")[group].attrs)
    return attrs["ome"] if version == "0.5" else attrs


def _validate(path, version: str) -> None:
    """ome-zarr-models validation of the plate, every well and every field (and its omero block)."""
    import ome_zarr_models.v04 as v04
    import ome_zarr_models.v05 as v05
    from ome_zarr_models.common.omero import Omero

    models = v05 if version == "0.5" else v04
    root = zarr.open_group(path, mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hcs = models.HCS.from_zarr(root)
        assert hcs.n_wells == len(WELLS)
        for well in hcs.well_groups:
            attrs = well.attributes.ome if version == "0.5" else well.attributes
            assert len(attrs.well.images) == 2
        for well in WELLS:
            row, column = well[0], int(well[1:])
            for field in range(2):
                models.Image.from_zarr(root[f"{row}/{column}/{field}"])
                Omero.model_validate(_image_attrs(path, f"{row}/{column}/{field}", version)["omero"])


# -- labels ---------------------------------------------------------------------------------------------


def _labels(shape=(255, 257), seed=0) -> np.ndarray:
    smooth = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 3)
    labels, count = ndimage.label(smooth > np.median(smooth))
    assert count > 20
    return labels.astype(np.int32)


def _invented(fine: np.ndarray, coarse: np.ndarray) -> int:
    """Coarse pixels whose value is none of the values of their 2×2 block of ``fine``."""
    y, x = fine.shape
    padded = np.pad(fine, [(0, y % 2), (0, x % 2)], mode="edge")  # repeats values already in the block
    blocks = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2)
    assert coarse.shape == (blocks.shape[0], blocks.shape[2])
    return int((~(blocks == coarse[:, None, :, None]).any(axis=(1, 3))).sum())


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_nearest_pyramid_of_a_label_image_invents_no_label(tmp_path, version):
    labels = np.stack([_labels(seed=s) for s in range(2)])  # two channels of one field
    path = tmp_path / "labels.zarr"
    _plate(path, version=version, shape=(1, 2, 1, 255, 257), wells=["A01"], fields=2, n_levels=3)
    write_planes(path, "A01", 0, [(0, 1, 0), (0, 0, 0)], labels[::-1], n_levels=3, downsample="nearest")
    for c in range(2):
        write_plane(path, "A01", 1, 0, c, 0, labels[c], n_levels=3)  # the default: block means
    nearest = [zarr.open_array(path / f"A/1/0/{level}", mode="r")[0, :, 0] for level in range(3)]
    mean = [zarr.open_array(path / f"A/1/1/{level}", mode="r")[0, :, 0] for level in range(3)]
    assert [a.shape for a in nearest] == [(2, 255, 257), (2, 128, 129), (2, 64, 65)]
    np.testing.assert_array_equal(nearest[0], labels)
    for c in range(2):
        assert _invented(nearest[0][c], nearest[1][c]) == 0
        assert _invented(nearest[1][c], nearest[2][c]) == 0
        assert set(np.unique(nearest[2][c])) <= set(np.unique(labels[c]))
        assert _invented(mean[0][c], mean[1][c]) > 0  # block means make labels up
    np.testing.assert_array_equal(nearest[1], labels[:, ::2, ::2])


def _old_mean(data: np.ndarray) -> np.ndarray:
    """The block mean the writer has always used (edges replicated, integers rounded)."""
    y, x = data.shape[-2:]
    pad = [(0, 0)] * (data.ndim - 2) + [(0, y % 2), (0, x % 2)]
    padded = np.pad(data, pad, mode="edge")
    blocks = padded.reshape(*padded.shape[:-2], padded.shape[-2] // 2, 2, padded.shape[-1] // 2, 2)
    mean = blocks.mean(axis=(-3, -1), dtype=np.float64)
    return (np.rint(mean) if data.dtype.kind in "iub" else mean).astype(data.dtype)


@pytest.mark.parametrize("dtype", ["uint16", "int32", "float32", "bool"])
def test_mean_is_unchanged_and_nearest_keeps_shape_and_dtype(dtype):
    data = (np.random.default_rng(4).random((3, 41, 30)) * 4000).astype(dtype)
    np.testing.assert_array_equal(downsample_2x(data), _old_mean(data))
    np.testing.assert_array_equal(downsample_2x(data, "mean"), _old_mean(data))
    nearest = downsample_2x(data, "nearest")
    assert nearest.shape == (3, 21, 15) and nearest.dtype == data.dtype and nearest.flags.c_contiguous
    np.testing.assert_array_equal(nearest, data[:, ::2, ::2])
    with pytest.raises(ValueError, match="downsample='mode'"):
        downsample_2x(data, "mode")


# -- channel windows ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "window"),
    [("uint8", (0, 255)), ("uint16", (0, 65535)), ("int16", (-32768, 32767)), ("int32", (0, 1)),
     ("uint32", (0, 1)), ("int64", (0, 1)), ("float32", (0, 1)), ("float64", (0, 1)), ("bool", (0, 1))],
)
def test_initial_window_before_any_data(dtype, window):
    assert initial_window(dtype) == window


def _windows(path, version, channel: int) -> list[dict]:
    out = []
    for well in WELLS:
        for field in range(2):
            out.append(_image_attrs(path, f"{well[0]}/{int(well[1:])}/{field}", version)["omero"]["channels"][channel]
                       ["window"])
    return out


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_set_channel_windows_from_data(tmp_path, version):
    path = tmp_path / "plate.ome.zarr"
    _plate(path, version=version)
    labels = np.arange(256, dtype=np.int32).reshape(16, 16) % 48
    write_plane(path, "B03", 1, 0, 1, 0, labels)
    assert _windows(path, version, 1)[0] == {"min": 0, "max": 1, "start": 0, "end": 1}  # int32 starts at 0..1
    field_doc = path / "B/3/1" / ("zarr.json" if version == "0.5" else ".zattrs")
    os.chmod(field_doc, 0o640)

    assert set_channel_windows(path, {1: (0, 47)}) == 6
    assert _windows(path, version, 1) == [{"start": 0.0, "end": 47.0, "min": 0.0, "max": 47.0}] * 6
    assert _windows(path, version, 0) == [{"start": 0.0, "end": 1.0, "min": 0.0, "max": 1.0}] * 6
    _validate(str(path), version)
    record = json.loads(field_doc.read_text())
    record = record["attributes"]["hcsgraph"] if version == "0.5" else record["hcsgraph"]
    assert record == {"window_from_data": [1]}
    assert stat.S_IMODE(os.stat(field_doc).st_mode) == 0o640

    set_channel_windows(path, {1: (3, 60), 0: (5.5, 7)})  # merge: channel 1 widens, channel 0 replaces 0..1
    assert _windows(path, version, 1) == [{"start": 0.0, "end": 60.0, "min": 0.0, "max": 60.0}] * 6
    assert _windows(path, version, 0) == [{"start": 5.5, "end": 7.0, "min": 5.5, "max": 7.0}] * 6
    set_channel_windows(path, {1: (2, 9)}, merge=False)
    assert _windows(path, version, 1) == [{"start": 2.0, "end": 9.0, "min": 2.0, "max": 9.0}] * 6
    _validate(str(path), version)

    np.testing.assert_array_equal(zarr.open_array(path / "B/3/1/0", mode="r")[0, 1, 0], labels)
    leftovers = [name for _, _, names in os.walk(path) for name in names if name.startswith(TEMP_PREFIX)]
    assert leftovers == []
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    node = next(iter(Reader(parse_url(str(path / "B/3/1")))()))
    assert node.metadata["channel_names"] == ["DAPI", "mask"]


def test_set_channel_windows_rejects_bad_input_and_changes_nothing(tmp_path):
    path = tmp_path / "plate.zarr"
    _plate(path)
    before = {p: p.read_bytes() for p in path.rglob("zarr.json")}
    with pytest.raises(ValueError, match="channel 2 is out of range.*2 channels"):
        set_channel_windows(path, {0: (0, 1), 2: (0, 5)})
    with pytest.raises(ValueError, match="low <= high"):
        set_channel_windows(path, {0: (5, 1)})
    with pytest.raises(ValueError, match="finite"):
        set_channel_windows(path, {0: (0, float("nan"))})
    with pytest.raises(ValueError, match="0-based channel index"):
        set_channel_windows(path, {-1: (0, 1)})
    with pytest.raises(ValueError, match="not an OME-Zarr plate"):
        set_channel_windows(tmp_path, {0: (0, 1)})
    assert set_channel_windows(path, {}) == 0
    assert {p: p.read_bytes() for p in path.rglob("zarr.json")} == before


def test_set_channel_windows_is_fast_on_a_96_well_plate(tmp_path):
    wells = [f"{r}{c:02d}" for r in "ABCDEFGH" for c in range(1, 13)]
    path = tmp_path / "plate.zarr"
    create_plate(path, plate_name="p", wells=wells, fields=4, shape_tczyx=(1, 3, 1, 8, 8), dtype="uint16",
                 channel_names=["a", "b", "c"])
    start = time.perf_counter()
    assert set_channel_windows(path, {0: (10, 900), 2: (0, 4000)}) == 384
    assert time.perf_counter() - start < 5.0
    last = json.loads((path / "H/12/3/zarr.json").read_text())["attributes"]["ome"]["omero"]["channels"]
    assert [c["window"]["end"] for c in last] == [900.0, 65535.0, 4000.0]


# -- permissions and overwrite ----------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_plate_directories_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        assert current_umask() == mask
        path = tmp_path / "plate.ome.zarr"
        _plate(path, wells=["A01"])
        _plate(path, wells=["B02"], version="0.4")  # replaced: the new one gets the umask too
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o777 & ~mask
    assert stat.S_IMODE(os.stat(path / "B/2/0").st_mode) == 0o777 & ~mask
    assert stat.S_IMODE(os.stat(path / ".zattrs").st_mode) == 0o666 & ~mask


def _foreign_plate(path):
    """An OME-Zarr plate that hcsgraph did not write (no writer record)."""
    _plate(path, wells=["A01"], fields=1)
    document = json.loads((path / "zarr.json").read_text())
    del document["attributes"]["hcsgraph"]
    (path / "zarr.json").write_text(json.dumps(document))


@pytest.mark.parametrize("kind", ["plain directory", "zarr group", "foreign plate", "file"])
def test_overwrite_never_replaces_what_hcsgraph_did_not_write(tmp_path, kind):
    path = tmp_path / "out.zarr"
    if kind == "plain directory":
        path.mkdir()
        (path / "results.csv").write_text("precious")
    elif kind == "zarr group":
        zarr.open_group(str(path), mode="w").attrs["note"] = "not a plate"
    elif kind == "foreign plate":
        _foreign_plate(path)
    else:
        path.write_text("precious")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert not is_hcsgraph_plate(path)
    with pytest.raises(FileExistsError, match=f"{path}.*not an OME-Zarr plate written by hcsgraph"):
        _plate(path, wells=["B02"], fields=1)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_overwrite_replaces_an_hcsgraph_plate(tmp_path, version):
    path = tmp_path / "out.zarr"
    _plate(path, version=version, wells=["A01"], fields=1)
    assert is_hcsgraph_plate(path)
    _plate(path, version="0.5", wells=["B02"], fields=1)
    assert (path / "B/2/0/0/zarr.json").is_file() and not (path / "A").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out.zarr"]
