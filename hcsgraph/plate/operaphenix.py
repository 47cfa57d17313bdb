"""Opera Phenix / Operetta plates: ``Index.idx.xml`` or ``Index.xml`` and names like ``r01c01f01p01-ch1sk1fk1fl1.tiff``.

The index gives the plate name, channel names, pixel size and the planes the acquisition expected; the
files on disk give what is there. ``f`` is the field (site), ``p`` the plane (z), ``ch`` the channel and
``sk`` the time point, all 1-based.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from hcsgraph.plate.index import (
    PlateIndex,
    PlateLayoutError,
    build_table,
    find_gaps,
    is_metadata_file,
    walk_files,
    well_name,
)

NAME = "operaphenix"
INDEX_NAMES = ("Index.idx.xml", "Index.xml")
FILE_RE = re.compile(
    r"^r(?P<row>\d{1,2})c(?P<column>\d{1,2})f(?P<site>\d{1,4})p(?P<z>\d{1,4})"
    r"-ch(?P<channel>\d{1,2})sk(?P<t>\d{1,5})fk\d+fl\d+\.tiff?$",
    re.IGNORECASE,
)
_UNIT_TO_UM = {"m": 1e6, "mm": 1e3, "um": 1.0, "µm": 1.0, "micrometer": 1.0, "nm": 1e-3}


def find_index(root: Path) -> Path | None:
    """The index XML in ``root`` or ``root/Images``, if any."""
    for directory in (root, root / "Images"):
        for name in INDEX_NAMES:
            if (directory / name).is_file():
                return directory / name
    return None


def looks_like(root: Path) -> bool:
    """True when ``root`` (or its ``Images`` folder) holds an Opera Phenix/Operetta index."""
    return find_index(root) is not None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element: ET.Element) -> dict[str, ET.Element]:
    return {_local(child.tag): child for child in element}


def _text(fields: dict[str, ET.Element], key: str) -> str | None:
    element = fields.get(key)
    return None if element is None or element.text is None else element.text.strip()


def _pixel_size_um(fields: dict[str, ET.Element]) -> float | None:
    element = fields.get("ImageResolutionX")
    if element is None or not element.text:
        return None
    factor = _UNIT_TO_UM.get(element.get("Unit", "m").strip().lower(), 1e6)
    return float(element.text) * factor


def parse_index(path: Path) -> dict:
    """Plate name, channel names, pixel size and expected wells/fields/planes/channels/time points."""
    try:
        tree = ET.parse(path)
    except ET.ParseError as exc:
        raise PlateLayoutError(f"cannot parse the plate index {path}: {exc}") from exc
    meta: dict = {"name": None, "channel_names": {}, "pixel_size_um": None, "wells": set(),
                  "sites": set(), "z": set(), "channels": set(), "t": set()}
    for element in tree.getroot().iter():
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
            if tag == "Image" and _text(fields, "Row") and _text(fields, "Col"):
                meta["wells"].add(well_name(int(_text(fields, "Row")), int(_text(fields, "Col"))))
                for key, dim, shift in (("FieldID", "sites", 0), ("PlaneID", "z", 0),
                                        ("ChannelID", "channels", 0), ("TimepointID", "t", 1)):
                    value = _text(fields, key)
                    if value is not None and value.isdigit():
                        meta[dim].add(int(value) + shift)
        elif tag == "Well" and len(element):
            fields = _children(element)
            if _text(fields, "Row") and _text(fields, "Col"):
                meta["wells"].add(well_name(int(_text(fields, "Row")), int(_text(fields, "Col"))))
    return meta


def parse(root: Path) -> PlateIndex:
    """Index an Opera Phenix / Operetta plate directory."""
    root = Path(root)
    index_path = find_index(root)
    if index_path is None:
        raise PlateLayoutError(f"no {' or '.join(INDEX_NAMES)} in {root} or {root / 'Images'}")
    meta = parse_index(index_path)
    records, unrecognized = [], []
    for rel in walk_files(str(root)):
        name = rel.rpartition("/")[2]
        match = FILE_RE.match(name)
        if match is None:
            if not is_metadata_file(name):
                unrecognized.append(rel)
            continue
        g = match.groupdict()
        records.append((well_name(int(g["row"]), int(g["column"])), int(g["site"]), int(g["channel"]),
                        int(g["z"]), int(g["t"]), str(root / rel)))
    table = build_table(records)
    gaps = None
    if not table.empty:
        gaps = find_gaps(table, **{k: (meta[k] or None) for k in ("wells", "sites", "channels", "z", "t")})
    return PlateIndex(
        table,
        name=meta["name"] or root.name,
        root=str(root),
        source_format=NAME,
        channel_names=meta["channel_names"],
        pixel_size_um=meta["pixel_size_um"],
        unrecognized=unrecognized,
        gaps=gaps,
    )
