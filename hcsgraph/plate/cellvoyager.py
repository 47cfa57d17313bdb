"""Yokogawa CellVoyager (CV7000 / CV8000 / CQ1) plates: ``MeasurementData.mlf`` lists every image.

The ``.mlf`` (XML, namespace ``http://www.yokogawa.co.jp/BTS/BTSSchema/1.0``) is the source of truth:
each ``<bts:MeasurementRecord bts:Type="IMG">`` gives a file name (``<plate>_B03_T0001F001L01A01Z01C01.tif``)
and its ``Row``, ``Column``, ``FieldIndex`` (site), ``TimePoint`` (or ``TimePointIndex``; t),
``ZIndex`` (z) and ``Ch`` (channel), all 1-based. Records of another type (``ERR``) are skipped. A
record with a ``ZImageProcessing`` value (a projection the instrument computed, e.g. ``MIP``) goes to
``PlateIndex.projections``. ``MeasurementDetail.mrf`` gives each channel's pixel size and image size
(``HorizontalPixelDimension``, ``HorizontalPixels``, ``VerticalPixels``) and, where present, its
``Target`` (channel name).

Listed files missing on disk are gaps and :data:`LISTED_MISSING` problems; image files on disk the list
does not name (shading-correction images, leftovers) are :data:`UNLISTED` problems and are not indexed.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath

import pandas as pd

from hcsgraph.plate.index import PlateIndex, PlateLayoutError, build_table, is_metadata_file, well_name
from hcsgraph.plate.problems import LISTED_MISSING, UNLISTED, PlateProblem
from hcsgraph.plate.scan import FileScan
from hcsgraph.plate.source import PlateSource, as_source

NAME = "cellvoyager"
NAMESPACE = "http://www.yokogawa.co.jp/BTS/BTSSchema/1.0"
MLF = "MeasurementData.mlf"
MRF = "MeasurementDetail.mrf"
# Sidecar files a CellVoyager measurement folder holds besides its images.
SIDECAR_SUFFIXES = (".mlf", ".mrf", ".mes", ".wpi", ".wpp", ".icr", ".tsp")
IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
FILE_RE = re.compile(
    r"^(?P<plate>.*)_(?P<well>[A-Z]{1,2}\d{2})_T(?P<t>\d+)F(?P<site>\d+)L\d+A\d+Z(?P<z>\d+)C(?P<channel>\d+)\.tiff?$",
    re.IGNORECASE,
)


def looks_like(source: PlateSource | Path) -> bool:
    """True when the folder holds a ``MeasurementData.mlf``."""
    return as_source(source).is_file(MLF)


def _attrs(element: ET.Element) -> dict[str, str]:
    """An element's attributes by local name (``bts:Row`` → ``Row``)."""
    return {key.rsplit("}", 1)[-1]: value for key, value in element.attrib.items()}


def _parse_xml(path: Path | str, data: bytes | None = None) -> ET.Element:
    try:
        return ET.parse(path).getroot() if data is None else ET.fromstring(data)
    except (ET.ParseError, OSError) as exc:
        raise PlateLayoutError(f"cannot parse the CellVoyager file {path}: {exc}") from exc


def _int(attrs: dict[str, str], path: Path, *keys: str) -> int:
    for key in keys:
        if attrs.get(key, "").strip().isdigit():
            return int(attrs[key])
    raise PlateLayoutError(f"{path}: an image record lacks an integer {' or '.join(keys)}: {attrs}")


def _safe_name(name: str, path: Path) -> str:
    """A listed file name, refused when it is absolute or leaves the measurement folder."""
    name = name.strip().replace("\\", "/")
    parts = PurePosixPath(name).parts
    if not name or name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise PlateLayoutError(f"{path}: the listed image {name!r} is not a file name inside the measurement "
                               "folder; refusing to read it")
    return name


def parse_mlf(path: Path | str, data: bytes | None = None) -> list[dict]:
    """The image records of a ``MeasurementData.mlf``: file, well, site, channel, z, t, projection.

    ``data``: the file's bytes when already read (``path`` then only names it in errors)."""
    records = []
    for element in _parse_xml(path, data).iter():
        if element.tag.rsplit("}", 1)[-1] != "MeasurementRecord":
            continue
        attrs = _attrs(element)
        if attrs.get("Type", "IMG").upper() != "IMG" or not (element.text or "").strip():
            continue
        records.append({
            "file": _safe_name(element.text, path),
            "well": well_name(_int(attrs, path, "Row"), _int(attrs, path, "Column")),
            "site": _int(attrs, path, "FieldIndex"),
            "channel": _int(attrs, path, "Ch"),
            "z": _int(attrs, path, "ZIndex"),
            "t": _int(attrs, path, "TimePoint", "TimePointIndex"),
            "projection": bool(attrs.get("ZImageProcessing", "").strip()),
        })
    return records


def parse_mrf(path: Path | str, data: bytes | None = None) -> dict:
    """Channel names, pixel size (µm) and image shape (Y, X) from a ``MeasurementDetail.mrf``."""
    meta: dict = {"channel_names": {}, "pixel_size_um": None, "image_shape": None}
    for element in _parse_xml(path, data).iter():
        if element.tag.rsplit("}", 1)[-1] != "MeasurementChannel":
            continue
        attrs = _attrs(element)
        channel = attrs.get("Ch", "")
        if channel.isdigit() and attrs.get("Target", "").strip():
            meta["channel_names"][int(channel)] = attrs["Target"].strip()
        if meta["pixel_size_um"] is None and attrs.get("HorizontalPixelDimension"):
            try:
                meta["pixel_size_um"] = float(attrs["HorizontalPixelDimension"])
            except ValueError:
                pass
        x, y = attrs.get("HorizontalPixels", ""), attrs.get("VerticalPixels", "")
        if meta["image_shape"] is None and x.isdigit() and y.isdigit():
            meta["image_shape"] = (int(y), int(x))
    return meta


def parse(source: PlateSource | Path, scan: FileScan | None = None) -> PlateIndex:
    """Index a CellVoyager measurement folder (``scan``: its files, when already listed)."""
    source = as_source(source)
    if not source.is_file(MLF):
        raise PlateLayoutError(f"no {MLF} in {source.root}")
    if source.remote:
        found = source.read_optional([MLF, MRF] if source.is_file(MRF) else [MLF])
        listed = parse_mlf(source.join(MLF), found[MLF])
        mrf = found.get(MRF)
        meta = parse_mrf(source.join(MRF), mrf) if mrf is not None else None
    else:
        listed = parse_mlf(source.path(MLF))
        meta = parse_mrf(source.path(MRF)) if source.is_file(MRF) else None
    meta = meta or {"channel_names": {}, "pixel_size_um": None, "image_shape": None}
    scan = scan or source.scan()
    on_disk = set(scan.files)
    problems = list(scan.problems)
    records, projections, missing, names = [], [], [], set()
    for rec in listed:
        names.add(rec["file"])
        if rec["file"] not in on_disk:
            problems.append(PlateProblem(LISTED_MISSING, rec["file"], f"listed in {MLF}, not on disk"))
            if not rec["projection"]:
                missing.append((rec["well"], rec["site"], rec["channel"], rec["z"], rec["t"]))
            continue
        row = (rec["well"], rec["site"], rec["channel"], 0 if rec["projection"] else rec["z"], rec["t"],
               source.join(rec["file"]))
        (projections if rec["projection"] else records).append(row)
    unrecognized = []
    for rel in scan.files:
        if rel in names:
            continue
        name = rel.rpartition("/")[2]
        if name.lower().endswith(IMAGE_SUFFIXES):
            problems.append(PlateProblem(UNLISTED, rel, f"an image file {MLF} does not list; not indexed"))
        elif not (is_metadata_file(name) or name.lower().endswith(SIDECAR_SUFFIXES)):
            unrecognized.append(rel)
    plates = {m["plate"] for r in listed if (m := FILE_RE.match(r["file"].rpartition("/")[2]))}
    gaps = pd.DataFrame(missing, columns=["well", "site", "channel", "z", "t"]).astype(
        {k: "int64" for k in ("site", "channel", "z", "t")})
    return PlateIndex(
        build_table(records),
        name=plates.pop() if len(plates) == 1 else source.name,
        root=source.root,
        source_format=NAME,
        channel_names=meta["channel_names"],
        pixel_size_um=meta["pixel_size_um"],
        unrecognized=unrecognized,
        gaps=gaps,
        image_shape=meta["image_shape"],
        problems=problems,
        projections=build_table(projections),
        storage_options=source.storage_options,
    )
