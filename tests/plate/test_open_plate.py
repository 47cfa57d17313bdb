"""open_plate on generic patterns, OME-Zarr plates, bad paths; read_plane on bad files; pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from hcsgraph.config import ZarrConfig
from hcsgraph.io.omezarr import create_plate, write_plane
from hcsgraph.plate import PlateLayoutError, PlateReadError, open_plate, read_plane


def test_generic_pattern_with_channel_names(tmp_path, tiff):
    for well in ("C03", "C10"):
        for site in (1, 2):
            for channel in ("DAPI", "Actin"):
                tiff(tmp_path / well / f"img_f{site}_{channel}.tif")
    tiff(tmp_path / "C03" / "preview.png")
    pattern = r"(?P<well>[A-P]\d{2})/img_f(?P<site>\d+)_(?P<channel>\w+)\.tif"
    index = open_plate(tmp_path, pattern=pattern)
    assert index.source_format == "pattern"
    assert index.wells == ["C03", "C10"] and index.sites == [1, 2]
    assert index.channel_names == {1: "Actin", 2: "DAPI"}
    assert set(index.table["z"]) == {1} and set(index.table["t"]) == {1}
    assert index.unrecognized == ["C03/preview.png"]


def test_generic_pattern_row_and_column_numbers(tmp_path, tiff):
    tiff(tmp_path / "plate_r2_c11_z3.tiff")
    index = open_plate(tmp_path, pattern=r"plate_r(?P<row>\d+)_c(?P<column>\d+)_z(?P<z>\d+)\.tiff")
    assert index.table[["row", "column", "well", "z"]].values.tolist() == [["B", 11, "B11", 3]]


def test_pattern_without_well_groups_is_refused(tmp_path, tiff):
    tiff(tmp_path / "a.tif")
    with pytest.raises(PlateLayoutError, match="named group 'well'"):
        open_plate(tmp_path, pattern=r"(?P<site>\d+)\.tif")


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_ome_zarr_plate_as_input(tmp_path, version):
    path = tmp_path / "in.zarr"
    create_plate(path, plate_name="Input", wells=["A01", "D07"], fields=2, shape_tczyx=(2, 2, 3, 8, 10),
                 dtype="uint16", channel_names=["Hoechst", "Tubulin"], pixel_size_um=0.4,
                 zarr_config=ZarrConfig(ome_zarr_version=version))
    plane = np.arange(80, dtype=np.uint16).reshape(8, 10)
    write_plane(path, "D07", 1, 1, 0, 2, plane)  # 0-based: field 1, t 1, c 0, z 2
    index = open_plate(path)
    assert index.source_format == "omezarr" and index.name == "Input"
    assert len(index) == 2 * 2 * 2 * 2 * 3
    assert index.wells == ["A01", "D07"]
    assert index.channel_names == {1: "Hoechst", 2: "Tubulin"}
    assert index.pixel_size_um == pytest.approx(0.4)
    assert index.image_shape == (8, 10) and index.dtype == np.uint16
    ref = index.select(well="D07", site=2, t=2, channel=1, z=3)["path"].iloc[0]
    np.testing.assert_array_equal(read_plane(ref), plane)
    assert not read_plane(index.table["path"].iloc[0]).any()


def test_missing_path_and_unknown_layout(tmp_path, tiff):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        open_plate(tmp_path / "nowhere")
    tiff(tmp_path / "image_001.tif")
    with pytest.raises(PlateLayoutError, match=r"\.HTD.*pattern=") as info:
        open_plate(tmp_path)
    for looked_for in ("OME-Zarr", "Index.idx.xml", "Index.xml", "A01_s1_w1.tif"):
        assert looked_for in str(info.value)


def test_truncated_tiff_names_the_file(tmp_path, tiff):
    good = tiff(tmp_path / "A01_s1_w1.tif", shape=(64, 64))
    broken = tmp_path / "A01_s2_w1.tif"
    broken.write_bytes(good.read_bytes()[:200])
    with pytest.raises(PlateReadError, match="A01_s2_w1.tif") as info:
        read_plane(broken)
    assert info.value.path == str(broken)
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value)
    with pytest.raises(PlateReadError, match="not_here.tif"):
        read_plane(tmp_path / "not_here.tif")


def test_index_pickles_with_metadata(tmp_path, tiff, htd):
    (tmp_path / "P.HTD").write_text(htd(waves=["DAPI"], wells={(1, 1)}))
    tiff(tmp_path / "P_A01_w1.tif", dtype="uint8")
    index = open_plate(tmp_path)
    assert index.dtype == np.uint8
    clone = pickle.loads(pickle.dumps(index))
    assert clone.table.equals(index.table)
    assert (clone.name, clone.channel_names, clone.image_shape) == ("P", {1: "DAPI"}, (8, 8))
