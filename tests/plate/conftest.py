"""Helpers for the plate tests: tiny real TIFF files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile


def write_tiff(path: Path, value: int = 0, shape: tuple[int, int] = (8, 8), dtype: str = "uint16") -> Path:
    """An 8×8 TIFF whose pixels are ``value`` plus a ramp, so that each file's pixels differ."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (np.arange(shape[0] * shape[1]).reshape(shape) + value).astype(dtype)
    tifffile.imwrite(path, data)
    return path


@pytest.fixture()
def tiff():
    return write_tiff


def htd_text(*, waves: list[str], x_wells: int = 12, y_wells: int = 8, wells: set[tuple[int, int]] = frozenset(),
             sites: int = 1, z_steps: int = 1, timepoints: int = 1) -> str:
    """An ImageXpress .HTD file body."""
    lines = ['"HTSInfoFile", Version 1.0', '"Description", "Test plate"', f'"TimePoints", {timepoints}',
             f'"ZSeries", {"TRUE" if z_steps > 1 else "FALSE"}', f'"ZSteps", {z_steps}',
             f'"XWells", {x_wells}', f'"YWells", {y_wells}']
    for r in range(1, y_wells + 1):
        lines.append(f'"WellsSelection{r}", ' + ", ".join(
            "TRUE" if (r, c) in wells else "FALSE" for c in range(1, x_wells + 1)))
    lines += [f'"Sites", {"TRUE" if sites > 1 else "FALSE"}', f'"XSites", {sites}', '"YSites", 1',
              '"SiteSelection1", ' + ", ".join(["TRUE"] * sites),
              '"Waves", TRUE', f'"NWavelengths", {len(waves)}']
    for i, name in enumerate(waves, 1):
        lines += [f'"WaveName{i}", "{name}"', f'"WaveCollect{i}", 1']
    lines.append('"EndFile"')
    return "\r\n".join(lines) + "\r\n"


@pytest.fixture()
def htd():
    return htd_text


def harmony_index_text(
    images: list[tuple[int, int, int, int, int, int]],
    names: dict[int, str],
    *,
    version: int = 6,
    first_timepoint: int = 0,
    size: tuple[int, int] | None = None,
    urls: bool = True,
    pixel_size_m: str = "2.99E-07",
) -> str:
    """An Opera Phenix/Operetta index written the way Harmony writes it.

    ``images``: (row, col, field, plane, ch, sk) with sk the 1-based time point in the file name;
    ``TimepointID`` is ``sk - 1 + first_timepoint``. Channel names, pixel size and image size appear
    only under ``<Maps>`` (one ``<Map>`` per kind of entry, as Harmony splits them).
    """
    namespace = f"http://www.perkinelmer.com/PEHH/HarmonyV{version}"
    flat = "".join(f'<Entry ChannelID="{c}"><FlatfieldProfile>Acapella:2013</FlatfieldProfile></Entry>'
                   for c in names)
    sized = "" if size is None else f"<ImageSizeX>{size[1]}</ImageSizeX><ImageSizeY>{size[0]}</ImageSizeY>"
    entries = "".join(
        f'<Entry ChannelID="{c}"><ChannelID>{c}</ChannelID><ChannelName>{n}</ChannelName>'
        f'<ImageType>Signal</ImageType><ImageResolutionX Unit="m">{pixel_size_m}</ImageResolutionX>'
        f'<ImageResolutionY Unit="m">{pixel_size_m}</ImageResolutionY>{sized}<BinningX>2</BinningX></Entry>'
        for c, n in names.items()
    )
    body = "".join(
        f'<Image Version="1"><id>{r:02d}{c:02d}K{sk}F{f}P{p}R{ch}</id><State>Ok</State>'
        + (f"<URL>r{r:02d}c{c:02d}f{f:02d}p{p:02d}-ch{ch}sk{sk}fk1fl1.tiff</URL>" if urls else "")
        + f"<Row>{r}</Row><Col>{c}</Col><FieldID>{f}</FieldID><PlaneID>{p}</PlaneID>"
        f"<TimepointID>{sk - 1 + first_timepoint}</TimepointID><FlimID>1</FlimID><ChannelID>{ch}</ChannelID>"
        "</Image>"
        for r, c, f, p, ch, sk in images
    )
    wells = sorted({(r, c) for r, c, *_ in images})
    well_xml = "".join(f"<Well><id>{r:02d}{c:02d}</id><Row>{r}</Row><Col>{c}</Col></Well>" for r, c in wells)
    return ('<?xml version="1.0" encoding="utf-8"?>\r\n'
            f'<EvaluationInputData xmlns:xsd="http://www.w3.org/2001/XMLSchema" Version="2" xmlns="{namespace}">\r\n'
            "  <User>Harmony</User><InstrumentType>Phenix</InstrumentType>\r\n"
            "  <Plates><Plate><PlateID>PID</PlateID><MeasurementID>M1</MeasurementID><Name>Screen 7</Name>"
            "<PlateTypeName>96 PerkinElmer CellCarrier Ultra</PlateTypeName></Plate></Plates>\r\n"
            f"  <Wells>{well_xml}</Wells>\r\n"
            f"  <Maps><Map>{flat}</Map><Map>{entries}</Map></Maps>\r\n"
            f"  <Images>{body}</Images>\r\n</EvaluationInputData>\r\n")


@pytest.fixture()
def harmony_index():
    return harmony_index_text
