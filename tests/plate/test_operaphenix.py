"""Opera Phenix (Index.idx.xml) and Operetta (Index.xml) directories."""

from __future__ import annotations

import pytest

from hcsgraph.plate import PlateLayoutError, open_plate, read_plane


def index_xml(namespace: str, images: list[tuple[int, int, int, int, int, int]], names: dict[int, str]) -> str:
    """An index with plate name, channel map and one Image element per (row, col, field, plane, ch, sk)."""
    entries = "".join(
        f'<Entry ChannelID="{c}"><ChannelName>{n}</ChannelName>'
        f'<ImageResolutionX Unit="m">2.99E-07</ImageResolutionX></Entry>'
        for c, n in names.items()
    )
    body = "".join(
        f"<Image Version=\"1\"><id>x</id><URL>r{r:02d}c{c:02d}f{f:02d}p{p:02d}-ch{ch}sk{sk}fk1fl1.tiff</URL>"
        f"<Row>{r}</Row><Col>{c}</Col><FieldID>{f}</FieldID><PlaneID>{p}</PlaneID>"
        f"<TimepointID>{sk - 1}</TimepointID><ChannelID>{ch}</ChannelID></Image>"
        for r, c, f, p, ch, sk in images
    )
    return (f'<?xml version="1.0" encoding="utf-8"?><EvaluationInputData xmlns="{namespace}">'
            f"<Plates><Plate><PlateID>PID</PlateID><Name>Screen 7</Name></Plate></Plates>"
            f"<Maps><Map>{entries}</Map></Maps><Images>{body}</Images></EvaluationInputData>")


def test_phenix_index_in_images_folder(tmp_path, tiff):
    images = [(r, c, f, p, ch, 1) for r, c in ((1, 1), (2, 3)) for f in (1, 2) for p in (1, 2) for ch in (1, 2)]
    folder = tmp_path / "Images"
    folder.mkdir()
    (folder / "Index.idx.xml").write_text(
        index_xml("http://www.perkinelmer.com/PEHH/HarmonyV6", images, {1: "HOECHST 33342", 2: "Alexa 488"}))
    for n, (r, c, f, p, ch, sk) in enumerate(images[:-1]):  # the last image is missing on disk
        tiff(folder / f"r{r:02d}c{c:02d}f{f:02d}p{p:02d}-ch{ch}sk{sk}fk1fl1.tiff", value=n)
    tiff(folder / "overview.tiff")
    index = open_plate(tmp_path)
    assert index.source_format == "operaphenix"
    assert index.name == "Screen 7"
    assert index.channel_names == {1: "HOECHST 33342", 2: "Alexa 488"}
    assert index.pixel_size_um == pytest.approx(0.299)
    assert index.wells == ["A01", "B03"]
    assert index.sites == [1, 2] and index.z_planes == [1, 2] and index.channels == [1, 2]
    assert len(index) == len(images) - 1
    assert [tuple(g) for g in index.gaps.itertuples(index=False)] == [("B03", 2, 2, 2, 1)]
    assert index.unrecognized == ["Images/overview.tiff"]
    first = index.select(well="A01", site=1, channel=1, z=1).iloc[0]
    assert read_plane(first["path"])[0, 0] == 0


def test_operetta_index_xml_with_timepoints(tmp_path, tiff):
    images = [(3, 4, 1, 1, 1, sk) for sk in (1, 2, 3)]
    (tmp_path / "Index.xml").write_text(
        index_xml("http://www.perkinelmer.com/PEHH/HarmonyV5", images, {1: "DAPI"}))
    for r, c, f, p, ch, sk in images:
        tiff(tmp_path / f"r{r:02d}c{c:02d}f{f:02d}p{p:02d}-ch{ch}sk{sk}fk1fl1.tiff", value=sk)
    index = open_plate(tmp_path)
    assert index.wells == ["C04"]
    assert index.timepoints == [1, 2, 3]
    assert index.channel_names == {1: "DAPI"}
    assert [read_plane(p)[0, 0] for p in index.table["path"]] == [1, 2, 3]


def test_broken_index_names_the_file(tmp_path):
    (tmp_path / "Index.idx.xml").write_text("<EvaluationInputData><Images>")
    with pytest.raises(PlateLayoutError, match="Index.idx.xml"):
        open_plate(tmp_path)
