"""ImageXpress (MetaXpress) directories: .HTD metadata and every file-naming variant."""

from __future__ import annotations

import numpy as np
import pytest

from hcsgraph.plate import open_plate, read_plane
from hcsgraph.plate.imagexpress import parse_name


def test_htd_names_sites_and_values(tmp_path, tiff, htd):
    (tmp_path / "Exp1.HTD").write_text(htd(waves=["DAPI", "FITC"], wells={(1, 1), (1, 2)}, sites=2))
    for w, well in enumerate(["A01", "A02"]):
        for s in (1, 2):
            for c in (1, 2):
                tiff(tmp_path / f"Exp1_{well}_s{s}_w{c}.tif", value=100 * w + 10 * s + c)
    index = open_plate(tmp_path)
    assert index.source_format == "imagexpress"
    assert index.name == "Exp1"
    assert len(index) == 8
    assert index.channel_names == {1: "DAPI", 2: "FITC"}
    assert index.wells == ["A01", "A02"] and index.rows == ["A"] and index.columns == [1, 2]
    assert list(index.table.columns) == ["row", "column", "well", "site", "channel", "z", "t", "path"]
    assert index.gaps.empty and index.unrecognized == []
    assert index.image_shape == (8, 8) and index.dtype == np.uint16
    row = index.select(well="A02", site=2, channel=1).iloc[0]
    assert row["path"].endswith("Exp1_A02_s2_w1.tif")
    assert read_plane(row["path"])[0, 0] == 100 + 20 + 1


def test_zero_padded_tokens_with_z_and_t(tmp_path, tiff, htd):
    (tmp_path / "Plate.HTD").write_text(htd(waves=["a", "b"], wells={(1, 1)}, sites=1, z_steps=3, timepoints=2))
    for c in (1, 2):
        for z in (1, 2, 3):
            for t in (1, 2):
                tiff(tmp_path / f"Plate_A01_s001_w{c}_z{z:03d}_t{t:03d}.TIF")
    index = open_plate(tmp_path)
    assert len(index) == 12
    assert index.z_planes == [1, 2, 3] and index.timepoints == [1, 2] and index.sites == [1]
    assert index.gaps.empty


def test_guid_suffix_and_thumbnails(tmp_path, tiff):
    guid = "A2B3C4D5-1E2F-4A5B-9C8D-0123456789AB"
    tiff(tmp_path / f"A01_s1_w1{guid}.tif")
    tiff(tmp_path / f"A01_s1_w2{guid.replace('A2', '7F')}.tif")
    tiff(tmp_path / f"A01_s1_w1_thumb{guid}.tif")
    tiff(tmp_path / "A01_s1_thumb.tif")
    index = open_plate(tmp_path)
    assert len(index) == 2
    assert index.channels == [1, 2]
    assert not any("thumb" in p.rsplit("/", 1)[-1] for p in index.table["path"])
    assert index.unrecognized == []


def test_timepoint_and_zstep_folders(tmp_path, tiff, htd):
    (tmp_path / "P.HTD").write_text(htd(waves=["DAPI"], wells={(2, 3)}, z_steps=2, timepoints=2))
    for t in (1, 2):
        for z in (1, 2):
            tiff(tmp_path / f"TimePoint_{t}" / f"ZStep_{z}" / "P_B03_w1.tif", value=10 * t + z)
    index = open_plate(tmp_path)
    assert index.wells == ["B03"]
    table = index.table.set_index(["t", "z"])
    assert read_plane(table.loc[(2, 1), "path"])[0, 0] == 21
    assert index.gaps.empty


def test_missing_site_and_wavelength_tokens(tmp_path, tiff):
    tiff(tmp_path / "A01.tif")
    tiff(tmp_path / "B12.tif")
    # Without _s/_w tokens or an .HTD the layout is ambiguous; an .HTD marks it as ImageXpress.
    (tmp_path / "x.HTD").write_text('"HTSInfoFile", Version 1.0\r\n"EndFile"\r\n')
    index = open_plate(tmp_path)
    assert index.wells == ["A01", "B12"]
    assert set(index.table["site"]) == {1} and set(index.table["channel"]) == {1}


def test_missing_site_token_only(tmp_path, tiff):
    for c in (1, 2):
        tiff(tmp_path / f"A01_w{c}.tif")
    index = open_plate(tmp_path)
    assert index.source_format == "imagexpress"
    assert index.sites == [1] and index.channels == [1, 2]


def test_384_well_names_and_gaps(tmp_path, tiff, htd):
    wells = {(16, 24), (1, 1), (8, 13)}
    (tmp_path / "P384.HTD").write_text(htd(waves=["w1"], x_wells=24, y_wells=16, wells=wells, sites=2))
    tiff(tmp_path / "P384_P24_s1_w1.tif")
    tiff(tmp_path / "P384_P24_s2_w1.tif")
    tiff(tmp_path / "P384_A01_s1_w1.tif")  # site 2 missing
    # H13 selected in the .HTD but never imaged
    (tmp_path / "notes.docx").write_bytes(b"x")
    tiff(tmp_path / "random_image.tif")
    index = open_plate(tmp_path)
    assert index.wells == ["A01", "P24"]
    assert index.rows == ["A", "P"] and index.columns == [1, 24]
    gaps = {(g.well, g.site) for g in index.gaps.itertuples()}
    assert gaps == {("A01", 2), ("H13", 1), ("H13", 2)}
    assert sorted(index.unrecognized) == ["notes.docx", "random_image.tif"]
    assert "gaps=3" in repr(index) and "unrecognized=2" in repr(index)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("A01_s1_w1.tif", ("A01", "1", "1", None, None)),
        ("My_Plate_2_B07_s12_w3_z002_t010.tiff", ("B07", "12", "3", "002", "010")),
        ("AF48_s1_w1.tif", ("AF48", "1", "1", None, None)),
        ("C05_w2F0E1D2C3-AAAA-BBBB-CCCC-DDDDEEEEFFFF.tif", ("C05", None, "2", None, None)),
    ],
)
def test_parse_name_variants(name, expected):
    parts = parse_name(name)
    assert (parts["well"], parts["site"], parts["channel"], parts["z"], parts["t"]) == expected
