"""Opera Phenix / Operetta plates: ``Index.idx.xml`` or ``Index.xml`` and names like ``r01c01f01p01-ch1sk1fk1fl1.tiff``.

The index gives the plate name, channel names, pixel size, image size and the planes the acquisition
expected; the files on disk give what is there. ``f`` is the field (site), ``p`` the plane (z), ``ch``
the channel and ``sk`` the time point, all 1-based.

An index's ``TimepointID`` counts from 0 in older ``Index.idx.xml`` files (Harmony 4-6) and from 1 in
Harmony 7+ ``Index.xml`` files, so the expected time point of an image is taken from its file name
(``URL``, ``sk<N>``); only for an image without one is it ``TimepointID`` shifted by what the index's
Harmony version (its namespace) says. Channel names, pixel size and image size are read wherever the
index has them (``<Maps>`` entries or ``<Image>`` elements). The index may start with a UTF-8 BOM.

Physical metadata: the pixel size is ``ImageResolutionX`` (``Unit="m"``, in µm on the index);
the z spacing the typical step of ``PositionZ`` between consecutive planes of one field, channel and
time point; the time interval the typical step between the start (earliest ``AbsTime``, else
``MeasurementTimeOffset``) of consecutive time points. Harmony's index names no channel colour.
"""

from __future__ import annotations

import re
import statistics
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

import pandas as pd

from hcsgraph.plate.index import (
    DIMENSIONS,
    PlateIndex,
    PlateLayoutError,
    build_table,
    find_gaps,
    is_metadata_file,
    positive_or_none,
    row_number,
    split_well,
    well_name,
)
from hcsgraph.plate.scan import FileScan
from hcsgraph.plate.source import PlateSource, as_source

NAME = "operaphenix"
INDEX_NAMES = ("Index.idx.xml", "Index.xml")
FILE_RE = re.compile(
    r"^r(?P<row>\d{1,2})c(?P<column>\d{1,2})f(?P<site>\d{1,4})p(?P<z>\d{1,4})"
    r"-ch(?P<channel>\d{1,2})sk(?P<t>\d{1,5})fk\d+fl\d+\.tiff?$",
    re.IGNORECASE,
)
_HARMONY_RE = re.compile(r"HarmonyV(\d+)", re.IGNORECASE)
_UNIT_TO_UM = {"m": 1e6, "mm": 1e3, "um": 1.0, "µm": 1.0, "micrometer": 1.0, "nm": 1e-3}


def find_index(source: PlateSource | Path) -> str | None:
    """The relative path of the index XML in the folder or its ``Images`` folder, if any."""
    source = as_source(source)
    for directory in ("", "Images"):
        for name in INDEX_NAMES:
            rel = f"{directory}/{name}" if directory else name
            if source.is_file(rel):
                return rel
    return None


def looks_like(source: PlateSource | Path) -> bool:
    """True when the folder (or its ``Images`` folder) holds an Opera Phenix/Operetta index."""
    return find_index(source) is not None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element) -> dict[str, ET.Element]:
    return {_local(child.tag): child for child in element}


def _text(fields: dict[str, ET.Element], key: str) -> str | None:
    element = fields.get(key)
    return None if element is None or element.text is None else element.text.strip()


def _um(fields: dict[str, ET.Element], key: str) -> float | None:
    """A length element (``<PositionZ Unit="m">``) in µm; metres without a unit; None if absent or bad."""
    element = fields.get(key)
    if element is None or not (element.text or "").strip():
        return None
    factor = _UNIT_TO_UM.get(element.get("Unit", "m").strip().lower(), 1e6)
    try:
        return float(element.text) * factor
    except ValueError:
        return None


def _pixel_size_um(fields: dict[str, ET.Element]) -> float | None:
    return positive_or_none(_um(fields, "ImageResolutionX"))


def _seconds(fields: dict[str, ET.Element]) -> float | None:
    """When an image was taken, in seconds: its ``AbsTime`` (ISO 8601), else ``MeasurementTimeOffset``."""
    stamp = _text(fields, "AbsTime")
    if stamp:
        try:
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    offset = _text(fields, "MeasurementTimeOffset")
    try:
        return None if offset is None else float(offset)
    except ValueError:
        return None


def _z_spacing_um(positions: dict[tuple, dict[int, float]]) -> float | None:
    """The median step of ``PositionZ`` between consecutive planes of each (well, field, channel, t)."""
    steps = []
    for planes in positions.values():
        ordered = [planes[p] for p in sorted(planes)]
        steps += [abs(b - a) for a, b in zip(ordered, ordered[1:], strict=False)]
    steps = [s for s in steps if s > 0]
    return positive_or_none(round(statistics.median(steps), 6)) if steps else None


def _time_interval_s(starts: dict[int, float]) -> float | None:
    """The median step between the starts of consecutive time points."""
    ordered = [starts[t] for t in sorted(starts)]
    steps = [b - a for a, b in zip(ordered, ordered[1:], strict=False) if b - a > 0]
    return positive_or_none(round(statistics.median(steps), 3)) if steps else None


def harmony_version(root_tag: str) -> int | None:
    """The Harmony major version in an index's namespace (``.../PEHH/HarmonyV7`` → 7), if any."""
    match = _HARMONY_RE.search(root_tag)
    return int(match.group(1)) if match else None


def _int(fields: dict[str, ET.Element], key: str) -> int | None:
    value = _text(fields, key)
    return int(value) if value is not None and value.isdigit() else None


def parse_index(path: Path | str, data: bytes | None = None) -> dict:
    """Plate name, channel names, pixel and image size, and the planes the index expects.

    ``data``: the index's bytes when already read (``path`` then only names it in errors).
    ``planes`` is the set of expected ``(well, site, channel, z, t)`` (1-based); ``wells``, ``sites``,
    ``z``, ``channels`` and ``t`` are their values, ``image_shape`` is (Y, X) or None.
    """
    try:  # expat reads (and drops) a UTF-8 byte order mark
        tree = ET.parse(path) if data is None else ET.ElementTree(ET.fromstring(data))
    except ET.ParseError as exc:
        raise PlateLayoutError(f"cannot parse the plate index {path}: {exc}") from exc
    root = tree.getroot()
    version = harmony_version(root.tag)
    meta: dict = {"name": None, "channel_names": {}, "pixel_size_um": None, "image_shape": None,
                  "wells": set(), "harmony_version": version}
    from_names, from_ids = set(), []  # expected planes: from file names, and (plane, TimepointID) otherwise
    positions: dict[tuple, dict[int, float]] = {}  # (well, field, channel, t) → plane → PositionZ (µm)
    starts: dict[int, float] = {}  # time point → its earliest image time (s)
    for element in root.iter():
        tag = _local(element.tag)
        if tag == "Plate" and meta["name"] is None:
            fields = _children(element)
            meta["name"] = _text(fields, "Name") or _text(fields, "PlateID")
        elif tag in ("Entry", "Image") and len(element):
            fields = _children(element)
            channel = _text(fields, "ChannelID") or element.get("ChannelID")
            if channel is not None and channel.isdigit():
                label = _text(fields, "ChannelName")
                if label:
                    meta["channel_names"].setdefault(int(channel), label)
                if meta["pixel_size_um"] is None:
                    meta["pixel_size_um"] = _pixel_size_um(fields)
            size_x, size_y = _int(fields, "ImageSizeX"), _int(fields, "ImageSizeY")
            if meta["image_shape"] is None and size_x and size_y:
                meta["image_shape"] = (size_y, size_x)
            if tag == "Image" and _int(fields, "Row") and _int(fields, "Col"):
                well = well_name(_int(fields, "Row"), _int(fields, "Col"))
                meta["wells"].add(well)
                url = FILE_RE.match((_text(fields, "URL") or "").replace("\\", "/").rpartition("/")[2])
                plane = None
                if url is not None:
                    g = url.groupdict()
                    plane = (well_name(int(g["row"]), int(g["column"])), int(g["site"]),
                             int(g["channel"]), int(g["z"]), int(g["t"]))
                    from_names.add(plane)
                else:
                    dims = [_int(fields, k) for k in ("FieldID", "ChannelID", "PlaneID", "TimepointID")]
                    if None not in dims:
                        plane = (well, dims[0], dims[1], dims[2], dims[3])
                        from_ids.append(plane)
                if plane is not None:
                    _note_position(fields, plane, positions, starts)
        elif tag == "Well" and len(element):
            fields = _children(element)
            if _int(fields, "Row") and _int(fields, "Col"):
                meta["wells"].add(well_name(_int(fields, "Row"), _int(fields, "Col")))
    if version is not None:
        shift = 0 if version >= 7 else 1
    else:  # no version: a TimepointID of 0 says the index counts from 0
        shift = 1 if any(p[4] == 0 for p in from_ids) else 0
    meta["planes"] = from_names | {(w, s, c, z, t + shift) for w, s, c, z, t in from_ids}
    meta["z_spacing_um"] = _z_spacing_um(positions)
    meta["time_interval_s"] = _time_interval_s(starts)
    for position, key in enumerate(("sites", "channels", "z", "t"), 1):
        meta[key] = {plane[position] for plane in meta["planes"]}
    return meta


def _note_position(fields: dict[str, ET.Element], plane: tuple, positions: dict[tuple, dict[int, float]],
                   starts: dict[int, float]) -> None:
    """Record an image's ``PositionZ`` and acquisition time for the z spacing and time interval."""
    well, site, channel, z, t = plane
    position = _um(fields, "PositionZ")
    if position is not None:
        positions.setdefault((well, site, channel, t), {})[z] = position
    when = _seconds(fields)
    if when is not None:
        starts[t] = min(when, starts.get(t, when))


def _gaps(table: pd.DataFrame, meta: dict) -> pd.DataFrame | None:
    """The planes the index lists that are not on disk (or the holes in the product without a list)."""
    if table.empty:
        return None
    if not meta["planes"]:
        return find_gaps(table, wells=meta["wells"] or None)
    keys = ["well", *DIMENSIONS]
    present = set(table[keys].itertuples(index=False, name=None))
    missing = sorted(meta["planes"] - present, key=lambda p: (*_well_order(p[0]), *p[1:]))
    frame = pd.DataFrame(missing, columns=["well", "site", "channel", "z", "t"])
    return frame[keys].astype({d: "int64" for d in DIMENSIONS})


def _well_order(well: str) -> tuple[int, int]:
    row, column = split_well(well)
    return row_number(row), column


def parse(source: PlateSource | Path, scan: FileScan | None = None) -> PlateIndex:
    """Index an Opera Phenix / Operetta plate folder (``scan``: its files, when already listed)."""
    source = as_source(source)
    index_rel = find_index(source)
    if index_rel is None:
        raise PlateLayoutError(f"no {' or '.join(INDEX_NAMES)} in {source.root} or {source.join('Images')}")
    meta = parse_index(source.join(index_rel), None if not source.remote else source.read_bytes(index_rel))
    scan = scan or source.scan()
    records, unrecognized = [], []
    for rel in scan.files:
        name = rel.rpartition("/")[2]
        match = FILE_RE.match(name)
        if match is None:
            if not is_metadata_file(name):
                unrecognized.append(rel)
            continue
        g = match.groupdict()
        records.append((well_name(int(g["row"]), int(g["column"])), int(g["site"]), int(g["channel"]),
                        int(g["z"]), int(g["t"]), source.join(rel)))
    table = build_table(records)
    return PlateIndex(
        table,
        name=meta["name"] or source.name,
        root=source.root,
        source_format=NAME,
        channel_names=meta["channel_names"],
        pixel_size_um=meta["pixel_size_um"],
        z_spacing_um=meta["z_spacing_um"],
        time_interval_s=meta["time_interval_s"],
        unrecognized=unrecognized,
        gaps=_gaps(table, meta),
        image_shape=meta["image_shape"],
        problems=scan.problems,
        storage_options=source.storage_options,
    )
