"""Plate reading that survives bad files: shape from the plate, clear read errors, duplicates, odd names,
symlinks, metadata paths that leave an OME-Zarr plate, and hcsgraph outputs written inside a plate."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from hcsgraph.config import ZarrConfig
from hcsgraph.io.omezarr import create_plate, write_plane
from hcsgraph.plate import PlateLayoutError, PlateReadError, open_plate, read_plane
from hcsgraph.plate.imagexpress import parse_name
from hcsgraph.plate.index import DuplicatePlaneError
from hcsgraph.plate.problems import (
    DANGLING_SYMLINK,
    METADATA_MISMATCH,
    ODD_IMAGE,
    REPEATED_FOLDER,
    SKIPPED_OUTPUT,
    SKIPPED_ZARR,
    SYMLINK_LOOP,
    UNREADABLE,
    UNRECOGNIZED,
)

SHAPE = (16, 16)


def _plate(root, tiff, wells=("A01", "A02", "B01"), sites=2, channels=2, shape=SHAPE):
    """A small ImageXpress plate without an .HTD: <root>/P_<well>_s<s>_w<c>.tif."""
    paths = []
    for well in wells:
        for s in range(1, sites + 1):
            for c in range(1, channels + 1):
                paths.append(tiff(root / f"P_{well}_s{s}_w{c}.tif", value=len(paths), shape=shape))
    return paths


def _kinds(index, kind):
    return {p.path: p.detail for p in index.problems if p.kind == kind}


# -- 1. shape and dtype from the plate, not from its first file ------------------------------------


def test_empty_first_file_does_not_decide_the_plate(tmp_path, tiff):
    paths = _plate(tmp_path, tiff)
    paths[0].write_bytes(b"")  # P_A01_s1_w1.tif, the first file of the plate
    index = open_plate(tmp_path)
    assert index.image_shape == SHAPE and index.dtype == np.uint16
    assert len(index) == 12  # the bad file stays indexed: reading it fails with its own error
    unreadable = _kinds(index, UNREADABLE)
    assert list(unreadable) == ["P_A01_s1_w1.tif"] and "empty" in unreadable["P_A01_s1_w1.tif"]
    assert "problems=1" in repr(index)


def test_odd_first_image_does_not_decide_the_plate(tmp_path, tiff):
    paths = _plate(tmp_path, tiff)
    tiff(paths[0], shape=(16, 17))
    tiff(paths[-1], dtype="uint8")
    index = open_plate(tmp_path)
    assert index.image_shape == SHAPE and index.dtype == np.uint16
    odd = _kinds(index, ODD_IMAGE)
    assert set(odd) == {"P_A01_s1_w1.tif", "P_B01_s2_w2.tif"}
    assert "16x17 uint16" in odd["P_A01_s1_w1.tif"] and "16x16 uint16" in odd["P_A01_s1_w1.tif"]
    assert "uint8" in odd["P_B01_s2_w2.tif"]


def test_every_sampled_file_unreadable_fails_only_on_access(tmp_path, tiff):
    for path in _plate(tmp_path, tiff, wells=("A01",), sites=1):
        path.write_bytes(b"II*\x00")  # a TIFF header and nothing else
    index = open_plate(tmp_path)  # does not fail
    assert len(_kinds(index, UNREADABLE)) == 2
    with pytest.raises(PlateLayoutError, match=r"image shape of plate .*P_A01_s1_w1.tif"):
        _ = index.image_shape


def test_phenix_image_size_from_the_index(tmp_path, tiff, harmony_index):
    images = [(1, 1, f, 1, 1, 1) for f in (1, 2, 3)]
    (tmp_path / "Index.idx.xml").write_text(harmony_index(images, {1: "DAPI"}, size=(12, 16)))
    tiff(tmp_path / "r01c01f01p01-ch1sk1fk1fl1.tiff", shape=(16, 16))  # the first two files are odd
    tiff(tmp_path / "r01c01f02p01-ch1sk1fk1fl1.tiff", shape=(16, 16))
    tiff(tmp_path / "r01c01f03p01-ch1sk1fk1fl1.tiff", shape=(12, 16))
    index = open_plate(tmp_path)
    assert index.image_shape == (12, 16) and index.dtype == np.uint16  # the index wins over the majority
    assert set(_kinds(index, ODD_IMAGE)) == {"r01c01f01p01-ch1sk1fk1fl1.tiff", "r01c01f02p01-ch1sk1fk1fl1.tiff"}

    (tmp_path / "Index.idx.xml").write_text(harmony_index(images, {1: "DAPI"}, size=(2160, 2560)))
    tiff(tmp_path / "r01c01f03p01-ch1sk1fk1fl1.tiff", shape=(16, 16))
    index = open_plate(tmp_path)  # an index that contradicts every image: the images win, and it is said
    assert index.image_shape == (16, 16)
    assert "2160x2560" in next(iter(_kinds(index, METADATA_MISMATCH).values()))


# -- read_plane: a plane that does not fit, empty and truncated files ------------------------------


def test_read_plane_refuses_a_plane_that_does_not_fit(tmp_path, tiff):
    good = tiff(tmp_path / "good.tif", shape=SHAPE)
    wide = tiff(tmp_path / "wide.tif", shape=(16, 17))
    wider = tiff(tmp_path / "wider.tif", shape=SHAPE, dtype="int32")
    small = tiff(tmp_path / "small.tif", shape=SHAPE, dtype="uint8")
    out = np.full(SHAPE, 7, np.uint16)
    with pytest.raises(PlateReadError, match=r"wide\.tif.*16x17 uint16.*16x16 uint16") as info:
        read_plane(wide, out=out)
    assert info.value.path == str(wide)
    with pytest.raises(PlateReadError, match=r"wider\.tif.*int32.*expected plane"):
        read_plane(wider, out=out)  # int32 does not fit uint16 without loss
    with pytest.raises(PlateReadError, match=r"small\.tif.*uint8.*expected plane"):
        read_plane(small, out=out, casting="no")
    assert (out == 7).all()  # untouched
    assert read_plane(small, out=out) is out and out[0, 1] == 1 and out.dtype == np.uint16  # uint8 fits
    assert read_plane(good, out=out) is out and out[0, 1] == 1


def test_read_plane_into_out_from_ome_zarr(tmp_path):
    path = tmp_path / "p.zarr"
    create_plate(path, plate_name="p", wells=["A01"], fields=1, shape_tczyx=(1, 1, 1, 8, 10), dtype="uint16",
                 channel_names=["a"], zarr_config=ZarrConfig(ome_zarr_version="0.5"))
    write_plane(path, "A01", 0, 0, 0, 0, np.arange(80, dtype=np.uint16).reshape(8, 10))
    ref = open_plate(path).table["path"].iloc[0]
    out = np.zeros((8, 10), np.uint16)
    assert read_plane(ref, out=out) is out and out[7, 9] == 79
    with pytest.raises(PlateReadError, match=r"8x10 uint16.*8x8 uint16"):
        read_plane(ref, out=np.zeros((8, 8), np.uint16))


def test_read_plane_names_empty_and_truncated_files(tmp_path, tiff):
    good = tiff(tmp_path / "good.tif", shape=(64, 64))
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    cut = tmp_path / "cut.tif"
    cut.write_bytes(good.read_bytes()[:-100])  # header intact, pixel data cut short
    with pytest.raises(PlateReadError, match=r"empty\.tif: the file is empty \(0 bytes\)"):
        read_plane(empty)
    for out in (None, np.empty((64, 64), np.uint16)):
        with pytest.raises(PlateReadError, match=r"cut\.tif: the file is truncated"):
            read_plane(cut, out=out)
    empty_png = tmp_path / "empty.png"
    empty_png.write_bytes(b"")
    with pytest.raises(PlateReadError, match=r"empty\.png: the file is empty"):
        read_plane(empty_png)


# -- 2. two files for one plane -------------------------------------------------------------------


def test_two_files_for_one_plane_are_refused(tmp_path, tiff):
    _plate(tmp_path, tiff, wells=("A01",), sites=1)
    tiff(tmp_path / "TimePoint_1" / "P_A01_s1_w2.tif")  # t = 1 from the folder: the same plane
    with pytest.raises(DuplicatePlaneError, match=r"well A01 site 1 channel 2 z 1 t 1") as info:
        open_plate(tmp_path)
    assert str(tmp_path / "P_A01_s1_w2.tif") in str(info.value)
    assert str(tmp_path / "TimePoint_1" / "P_A01_s1_w2.tif") in str(info.value)
    assert isinstance(info.value, PlateLayoutError)


def test_pattern_that_maps_two_files_to_one_plane(tmp_path, tiff):
    tiff(tmp_path / "A01_x_DAPI.tif")
    tiff(tmp_path / "A01_y_DAPI.tif")
    with pytest.raises(DuplicatePlaneError, match=r"A01_x_DAPI\.tif and .*A01_y_DAPI\.tif.*capture every part"):
        open_plate(tmp_path, pattern=r"(?P<well>[A-P]\d{2})_\w_(?P<channel>\w+)\.tif")


# -- 3. file names: the well is a real well token ------------------------------------------------


@pytest.mark.parametrize("name", [
    "SynthPlate_..A03_s1_w1.tif",  # '..A03' is no well, and 's1' must not become one
    "Plate_s1_w1.tif",
    "xA01_s1_w1.tif",  # the well must follow the start of the name or '_'
    "P_a01_s1_w1.tif",  # wells are upper case
    "P_AG01_s1_w1.tif",  # rows stop at AF
    "P_A49_s1_w1.tif",  # columns stop at 48
    "P_A00_s1_w1.tif",
    "P_A1_s1_w1.tif",  # two-digit columns
    "P_A001_s1_w1.tif",
])
def test_names_without_a_real_well_are_not_images(name):
    assert parse_name(name) is None


@pytest.mark.parametrize("name, well, site, channel, prefix", [
    ("9987_B02_s1_w1.TIF", "B02", "1", "1", "9987"),
    ("SynthPlate_A03_s1_w1.tif", "A03", "1", "1", "SynthPlate"),
    ("My.Plate..v2_P24_w3.tiff", "P24", None, "3", "My.Plate..v2"),
    ("Plate_A01_B02_s2_w1.tif", "B02", "2", "1", "Plate_A01"),
    ("AF48_s1_w1.tif", "AF48", "1", "1", None),
])
def test_names_with_plate_prefixes(name, well, site, channel, prefix):
    parts = parse_name(name)
    assert (parts["well"], parts["site"], parts["channel"], parts["prefix"]) == (well, site, channel, prefix)


def test_bad_names_are_reported_not_indexed(tmp_path, tiff):
    _plate(tmp_path, tiff, wells=("A03",), sites=1)
    tiff(tmp_path / "SynthPlate_..A03_s1_w1.tif")
    tiff(tmp_path / "SynthPlate_xA03_s2_w1.tif")
    index = open_plate(tmp_path)
    assert index.wells == ["A03"] and index.sites == [1]
    assert sorted(index.unrecognized) == ["SynthPlate_..A03_s1_w1.tif", "SynthPlate_xA03_s2_w1.tif"]
    assert set(_kinds(index, UNRECOGNIZED)) == set(index.unrecognized)


# -- 4. symlinks -----------------------------------------------------------------------------------


def test_dangling_symlink_is_reported(tmp_path, tiff):
    _plate(tmp_path, tiff, wells=("A01",), sites=1)
    os.symlink(tmp_path / "gone.tif", tmp_path / "P_A02_s1_w1.tif")
    (tmp_path / "TimePoint_2").mkdir()
    os.symlink("/nonexistent/folder", tmp_path / "TimePoint_2" / "elsewhere")
    index = open_plate(tmp_path)
    assert index.wells == ["A01"]
    dangling = _kinds(index, DANGLING_SYMLINK)
    assert set(dangling) == {"P_A02_s1_w1.tif", "TimePoint_2/elsewhere"}
    assert "gone.tif" in dangling["P_A02_s1_w1.tif"]


def test_symlink_loops_and_repeated_folders(tmp_path, tiff):
    plate = tmp_path / "plate"
    _plate(plate / "TimePoint_1", tiff, wells=("A01",), sites=1)
    os.symlink("..", plate / "TimePoint_1" / "up")  # back to the plate: a loop
    os.symlink("self", plate / "self")  # a link to itself
    os.symlink("TimePoint_1", plate / "latest")  # the same folder again
    outside = tmp_path / "elsewhere" / "t2"
    _plate(outside, tiff, wells=("A01",), sites=1)
    os.symlink(outside, plate / "TimePoint_2")  # a folder elsewhere: followed
    index = open_plate(plate)
    assert index.timepoints == [1, 2] and len(index) == 4
    assert set(_kinds(index, SYMLINK_LOOP)) == {"TimePoint_1/up", "self"}
    assert _kinds(index, REPEATED_FOLDER) == {"latest": "the same folder as TimePoint_1"}


# -- 5. OME-Zarr metadata paths stay inside the plate -------------------------------------------------


def _zarr_plate(tmp_path):
    path = tmp_path / "in.zarr"
    create_plate(path, plate_name="In", wells=["A01"], fields=1, shape_tczyx=(1, 1, 1, 8, 8), dtype="uint16",
                 channel_names=["a"], zarr_config=ZarrConfig(ome_zarr_version="0.5"))
    # An array outside the plate that a crafted path could point at.
    create_plate(tmp_path / "other.zarr", plate_name="Other", wells=["A01"], fields=1,
                 shape_tczyx=(1, 1, 1, 8, 8), dtype="uint16", channel_names=["a"],
                 zarr_config=ZarrConfig(ome_zarr_version="0.5"))
    return path


def _edit(path, change):
    meta = json.loads(path.read_text())
    change(meta["attributes"]["ome"])
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("where, bad", [
    ("field", "../../../other.zarr/A/1/0"),
    ("field", "ABSOLUTE"),
    ("well", "../other.zarr/A/1"),
    ("well", "A/../../other.zarr"),
    ("dataset", "../../../../other.zarr/A/1/0/0"),
])
def test_ome_zarr_paths_that_leave_the_plate_are_refused(tmp_path, where, bad):
    plate = _zarr_plate(tmp_path)
    if bad == "ABSOLUTE":
        bad = str(tmp_path / "other.zarr" / "A" / "1" / "0")
    if where == "well":
        _edit(plate / "zarr.json", lambda ome: ome["plate"]["wells"][0].update(path=bad))
    elif where == "field":
        _edit(plate / "A/1/zarr.json", lambda ome: ome["well"]["images"][0].update(path=bad))
    else:
        _edit(plate / "A/1/0/zarr.json", lambda ome: ome["multiscales"][0]["datasets"][0].update(path=bad))
    with pytest.raises(PlateLayoutError, match=f"{where} path '{bad}'.*inside the plate"):
        open_plate(plate)


def test_ome_zarr_field_symlinked_out_of_the_plate_is_refused(tmp_path):
    plate = _zarr_plate(tmp_path)
    os.symlink(tmp_path / "other.zarr" / "A" / "1" / "0", plate / "A" / "1" / "7")
    _edit(plate / "A/1/zarr.json", lambda ome: ome["well"]["images"][0].update(path="7"))
    with pytest.raises(PlateLayoutError, match="field path '7'"):
        open_plate(plate)


# -- 6. hcsgraph outputs inside a plate are not input -----------------------------------------------


def _output(folder, tiff):
    """What an hcsgraph run leaves in its output folder (disk backend) and a Zarr store."""
    (folder / ".hcsgraph" / "wells").mkdir(parents=True)
    (folder / "run.json").write_text("{}")
    tiff(folder / "images" / "A01" / "A01_s1_w1_z1_t1.tif")
    (folder / "plate.ome.zarr").mkdir()
    (folder / "plate.ome.zarr" / "zarr.json").write_text("{}")


def test_output_folder_inside_a_plate_is_skipped(tmp_path, tiff):
    _plate(tmp_path, tiff, wells=("A01",), sites=1)
    _output(tmp_path / "results", tiff)
    index = open_plate(tmp_path)
    assert len(index) == 2 and index.unrecognized == []
    assert list(_kinds(index, SKIPPED_OUTPUT)) == ["results"]


def test_output_written_into_the_plate_folder_is_skipped(tmp_path, tiff):
    _plate(tmp_path, tiff, wells=("A01",), sites=1)
    _output(tmp_path, tiff)
    (tmp_path / "old.zarr").mkdir()
    (tmp_path / "old.zarr" / ".zgroup").write_text("{}")
    (tmp_path / "old.zarr" / "0.0").write_bytes(b"chunk")
    index = open_plate(tmp_path)
    assert len(index) == 2 and index.unrecognized == []
    assert set(_kinds(index, SKIPPED_OUTPUT)) == {"images", "plate.ome.zarr"}
    assert set(_kinds(index, SKIPPED_ZARR)) == {"old.zarr"}


def test_plate_holding_only_an_output_says_what_it_skipped(tmp_path, tiff):
    _output(tmp_path, tiff)
    with pytest.raises(PlateLayoutError, match="skipped hcsgraph output: 2"):
        open_plate(tmp_path)
