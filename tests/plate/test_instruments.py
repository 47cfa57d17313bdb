"""Instrument variants: Harmony 7+ indexes, MetaXpress single-wavelength and z-stack exports, CellVoyager."""

from __future__ import annotations

import numpy as np
import pytest

from hcsgraph.plate import PlateLayoutError, open_plate, read_plane
from hcsgraph.plate.problems import LISTED_MISSING, PROJECTIONS_ONLY, UNLISTED
from hcsgraph.plate.synthetic import make_plate

GUID = "A1B2C3D4-E5F6-4A5B-9C8D-0123456789AB"


def _phenix_files(folder, tiff, images):
    for n, (r, c, f, p, ch, sk) in enumerate(images):
        tiff(folder / f"r{r:02d}c{c:02d}f{f:02d}p{p:02d}-ch{ch}sk{sk}fk1fl1.tiff", value=n, shape=(12, 16))


# -- Opera Phenix / Operetta: Harmony 7+ Index.xml ----------------------------------------------------


@pytest.mark.parametrize("urls", [True, False])
def test_harmony7_index_counts_timepoints_from_one(tmp_path, tiff, harmony_index, urls):
    images = [(2, 3, f, 1, ch, sk) for f in (1, 2) for ch in (1, 2) for sk in (1, 2, 3)]
    text = harmony_index(images, {1: "HOECHST 33342", 2: "Alexa 488"}, version=7, first_timepoint=1,
                         size=(12, 16), urls=urls, pixel_size_m="6.5E-07")
    (tmp_path / "Images").mkdir()
    (tmp_path / "Images" / "Index.xml").write_bytes(b"\xef\xbb\xbf" + text.encode())  # Harmony writes a BOM
    _phenix_files(tmp_path / "Images", tiff, images)
    index = open_plate(tmp_path)
    assert index.source_format == "operaphenix" and index.name == "Screen 7"
    assert index.timepoints == [1, 2, 3]
    assert index.gaps.empty  # no made-up time point 4, no missing time point 1
    assert index.channel_names == {1: "HOECHST 33342", 2: "Alexa 488"}  # only under <Maps>
    assert index.pixel_size_um == pytest.approx(0.65)
    assert index.image_shape == (12, 16)


@pytest.mark.parametrize("version, first", [(6, 0), (5, 0), (7, 1)])
def test_missing_timepoint_is_the_right_gap(tmp_path, tiff, harmony_index, version, first):
    images = [(1, 1, 1, 1, 1, sk) for sk in (1, 2, 3)]
    name = "Index.xml" if version >= 7 else "Index.idx.xml"
    (tmp_path / name).write_text(harmony_index(images, {1: "DAPI"}, version=version, first_timepoint=first,
                                               urls=False))
    _phenix_files(tmp_path, tiff, images[:2])  # the third time point never reached the disk
    index = open_plate(tmp_path)
    assert [tuple(g) for g in index.gaps.itertuples(index=False)] == [("A01", 1, 1, 1, 3)]


def test_index_without_a_version_counts_from_the_ids(tmp_path, tiff, harmony_index):
    images = [(1, 1, 1, 1, 1, sk) for sk in (1, 2)]
    text = harmony_index(images, {1: "DAPI"}, first_timepoint=0, urls=False)
    (tmp_path / "Index.idx.xml").write_text(text.replace("/PEHH/HarmonyV6", "/PEHH/Harmony"))
    _phenix_files(tmp_path, tiff, images)
    assert open_plate(tmp_path).gaps.empty


# -- MetaXpress single-wavelength exports --------------------------------------------------------------


def test_single_wavelength_names_with_guids(tmp_path, tiff):
    tiff(tmp_path / f"Plate1_C03{GUID}.tif", value=1)
    tiff(tmp_path / f"Plate1_C04{GUID.replace('A1', 'F7')}.tif", value=2)
    tiff(tmp_path / f"Plate1_C03_thumb{GUID}.tif")
    index = open_plate(tmp_path)
    assert index.source_format == "imagexpress" and index.name == "Plate1"
    assert index.wells == ["C03", "C04"] and index.sites == [1] and index.channels == [1]
    assert index.unrecognized == [] and not any("thumb" in p for p in index.table["path"])
    assert read_plane(index.select(well="C04")["path"].iloc[0])[0, 0] == 2


def test_single_wavelength_names_with_sites(tmp_path, tiff):
    for s in (1, 2, 3):
        tiff(tmp_path / "TimePoint_1" / f"Plate1_B02_s{s}{GUID[:-1]}{s}.tif", value=s)
        tiff(tmp_path / "TimePoint_1" / f"Plate1_B02_s{s}_thumb{GUID}.tif")
    index = open_plate(tmp_path)
    assert index.wells == ["B02"] and index.sites == [1, 2, 3] and len(index) == 3
    assert [read_plane(p)[0, 0] for p in index.table["path"]] == [1, 2, 3]


# -- MetaXpress z-stack exports: ZStep_0 holds projections ---------------------------------------------


def test_zstep0_projections_are_kept_out_of_the_stack(tmp_path, tiff, htd):
    (tmp_path / "P.HTD").write_text(htd(waves=["DAPI", "GFP"], wells={(1, 1)}, sites=2, z_steps=3))
    for z in range(4):  # ZStep_0: the projections
        for s in (1, 2):
            for c in (1, 2):
                tiff(tmp_path / "TimePoint_1" / f"ZStep_{z}" / f"P_A01_s{s}_w{c}.tif", value=10 * z + c)
    index = open_plate(tmp_path)
    assert index.z_planes == [1, 2, 3] and len(index) == 12 and index.gaps.empty
    assert not index.table["path"].str.contains("ZStep_0").any()
    projections = index.projections
    assert len(projections) == 4 and set(projections["z"]) == {0}
    assert list(projections.columns) == list(index.table.columns)
    assert projections["path"].str.contains("ZStep_0").all()
    assert read_plane(projections.query("site == 2 and channel == 2")["path"].iloc[0])[0, 0] == 2


def test_plate_of_projections_only(tmp_path, tiff):
    for s in (1, 2):
        tiff(tmp_path / "TimePoint_1" / "ZStep_0" / f"P_A01_s{s}_w1.tif")
    index = open_plate(tmp_path)
    assert len(index) == 2 and index.z_planes == [1] and index.projections.empty
    assert [p.kind for p in index.problems] == [PROJECTIONS_ONLY]


# -- what keeps working -----------------------------------------------------------------------------


def test_plate_prefixes_upper_case_and_timepoint_folders(tmp_path, tiff):
    for t in (1, 2):
        for well in ("B02", "B03"):
            tiff(tmp_path / f"TimePoint_{t}" / f"9987_{well}_s1_w1.TIF", value=t)
            tiff(tmp_path / f"TimePoint_{t}" / f"9987_{well}_s1_w1_thumb.TIF")
    index = open_plate(tmp_path)
    assert index.name == "9987" and index.wells == ["B02", "B03"] and index.timepoints == [1, 2]
    assert len(index) == 4 and index.unrecognized == [] and index.problems == []
    assert index.dtype == np.uint16


# -- Yokogawa CellVoyager ---------------------------------------------------------------------------

BTS = "http://www.yokogawa.co.jp/BTS/BTSSchema/1.0"


def test_synthetic_cellvoyager_plate(tmp_path):
    plate = make_plate(tmp_path / "cv", layout="cellvoyager", wells=["B03", "C10"], sites=2, channels=2, z=2, t=2,
                       size=32, pixel_size_um=0.325, plate_name="AssayPlate_01")
    index = open_plate(plate.path)
    assert index.source_format == "cellvoyager" and index.name == "AssayPlate_01"
    assert index.wells == ["B03", "C10"] and index.sites == [1, 2] and index.channels == [1, 2]
    assert index.z_planes == [1, 2] and index.timepoints == [1, 2]
    assert index.channel_names == {1: "DAPI", 2: "GFP"}
    assert index.pixel_size_um == pytest.approx(0.325) and index.image_shape == (32, 32)
    assert index.gaps.empty and index.unrecognized == [] and index.problems == []
    merged = index.table.merge(plate.ground_truth, on=["well", "site", "channel", "z", "t"], suffixes=("", "_gt"))
    assert len(merged) == len(index) == 2 * 2 * 2 * 2 * 2
    assert (merged["path"] == merged["path_gt"]).all()
    assert "_B03_T0002F001L01A01Z02C01.tif" in index.select(well="B03", t=2, site=1, z=2, channel=1)["path"].iloc[0]


def _record(name, row, col, field=1, t=1, z=1, ch=1, kind="IMG", extra=""):
    return (f'<bts:MeasurementRecord bts:Type="{kind}" bts:Row="{row}" bts:Column="{col}" bts:FieldIndex="{field}" '
            f'bts:TimePointIndex="{t}" bts:ZIndex="{z}" bts:ActionIndex="1" bts:Ch="{ch}"{extra}>{name}'
            "</bts:MeasurementRecord>")


def _mlf(records):
    return (f'<?xml version="1.0" encoding="utf-8"?><bts:MeasurementData xmlns:bts="{BTS}">'
            + "".join(records) + "</bts:MeasurementData>")


def test_cellvoyager_list_is_the_source_of_truth(tmp_path, tiff):
    planes = [(f, c) for f in (1, 2) for c in (1, 2)]
    names = [f"P_B03_T0001F00{f}L01A01Z01C0{c}.tif" for f, c in planes]
    records = [_record(n, 2, 3, field=f, ch=c) for n, (f, c) in zip(names, planes, strict=True)]
    records.append(_record("P_B03_T0001F001L01A01Z01C01.tif", 2, 3, kind="ERR"))  # an acquisition error
    records.append(_record("P_B03_T0001F001L01A02Z00C01.tif", 2, 3, z=0, extra=' bts:ZImageProcessing="MIP"'))
    (tmp_path / "MeasurementData.mlf").write_text(_mlf(records))
    (tmp_path / "MeasurementDetail.mrf").write_text(
        f'<bts:MeasurementDetail xmlns:bts="{BTS}"><bts:MeasurementChannel bts:Ch="1" '
        'bts:HorizontalPixelDimension="0.65" bts:HorizontalPixels="16" bts:VerticalPixels="8"/>'
        '<bts:MeasurementChannel bts:Ch="2" bts:HorizontalPixelDimension="0.65" bts:HorizontalPixels="16" '
        'bts:VerticalPixels="8"/></bts:MeasurementDetail>')
    for n in names[:-1]:  # the last listed image never reached the disk
        tiff(tmp_path / n, shape=(8, 16))
    tiff(tmp_path / "P_B03_T0001F001L01A02Z00C01.tif", shape=(8, 16))
    tiff(tmp_path / "P_B03_T0001F003L01A01Z01C01.tif", shape=(8, 16))  # on disk, not listed
    tiff(tmp_path / "SC_BP445-45_40x_M10_CH01.tif", shape=(8, 16))  # a shading-correction image
    for sidecar in ("MeasurementSetting.mes", "AssayPlate.wpi", "AssayPlate.wpp"):
        (tmp_path / sidecar).write_text("<x/>")
    index = open_plate(tmp_path)
    assert index.source_format == "cellvoyager" and index.name == "P"
    assert len(index) == 3 and index.sites == [1, 2] and index.pixel_size_um == pytest.approx(0.65)
    assert index.image_shape == (8, 16)
    assert [tuple(g) for g in index.gaps.itertuples(index=False)] == [("B03", 2, 2, 1, 1)]
    assert len(index.projections) == 1 and index.projections["z"].tolist() == [0]
    kinds = {(p.kind, p.path) for p in index.problems}
    assert kinds == {(LISTED_MISSING, names[-1]), (UNLISTED, "P_B03_T0001F003L01A01Z01C01.tif"),
                     (UNLISTED, "SC_BP445-45_40x_M10_CH01.tif")}
    assert index.unrecognized == []


@pytest.mark.parametrize("bad", ["../elsewhere.tif", "/tmp/elsewhere.tif", "C:\\\\data\\\\x.tif"])
def test_cellvoyager_list_naming_files_outside_is_refused(tmp_path, bad):
    (tmp_path / "MeasurementData.mlf").write_text(_mlf([_record(bad, 1, 1)]))
    with pytest.raises(PlateLayoutError, match="not a file name inside the measurement folder"):
        open_plate(tmp_path)
