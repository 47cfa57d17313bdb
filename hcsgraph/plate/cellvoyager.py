"""Yokogawa CellVoyager (CV7000 / CV8000 / CQ1) plates: ``MeasurementData.mlf`` lists every image.

The ``.mlf`` (XML, namespace ``http://www.yokogawa.co.jp/BTS/BTSSchema/1.0``) is the source of truth:
each ``<bts:MeasurementRecord bts:Type="IMG">`` gives a file name (``<plate>_B03_T0001F001L01A01Z01C01.tif``)
and its ``Row``, ``Column``, ``FieldIndex`` (site), ``TimePoint`` (or ``TimePointIndex``; t),
``ZIndex`` (z) and ``Ch`` (channel), all 1-based. Records of another type (``ERR``) are skipped. A
record with a ``ZImageProcessing`` value (a projection the instrument computed, e.g. ``MIP``) goes to
``PlateIndex.projections``. ``MeasurementDetail.mrf`` gives each channel's pixel size and image size
(``HorizontalPixelDimension``, ``HorizontalPixels``, ``VerticalPixels``) and, where present, its
``Target`` (channel name), and names the measurement setting (``MeasurementSettingFileName``, a
``.mes`` file beside it) whose ``<bts:ChannelList>`` gives each channel's ``Target`` and display
``Color`` (ARGB, ``#FF0000FF``: blue) and whose ``ActionAcquire3D`` gives the ``SliceLength`` (µm).

Physical metadata: pixel size from the ``.mrf`` (µm); z spacing the typical step of the records'
``Z`` (µm) between consecutive ``ZIndex`` of one field, channel and time point, else the ``.mes``
``SliceLength``; time interval the typical step between the start (earliest record ``Time``) of
consecutive time points. A missing or unreadable ``.mes`` only leaves its values unknown.

Listed files missing on disk are gaps and :data:`LISTED_MISSING` problems; image files on disk the list
does not name (shading-correction images, leftovers) are :data:`UNLISTED` problems and are not indexed.
"""

from __future__ import annotations

import logging
import re
import statistics
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path, PurePosixPath

import pandas as pd

from hcsgraph.plate.index import (
    PlateIndex,
    PlateLayoutError,
    build_table,
    hex_colour,
    is_metadata_file,
    positive_or_none,
    well_name,
)
from hcsgraph.plate.problems import LISTED_MISSING, UNLISTED, PlateProblem
from hcsgraph.plate.scan import FileScan
from hcsgraph.plate.source import PlateSource, as_source

log = logging.getLogger(__name__)

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
            "z_um": _float(attrs.get("Z")),
            "time_s": _time(attrs.get("Time")),
        })
    return records


def _float(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def _time(text: str | None) -> float | None:
    """An ISO 8601 record time in seconds, or None."""
    if not (text or "").strip():
        return None
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def z_spacing_um(records: list[dict]) -> float | None:
    """The median ``Z`` step between consecutive z planes of each field, channel and time point."""
    stacks: dict[tuple, dict[int, float]] = {}
    for rec in records:
        if not rec["projection"] and rec.get("z_um") is not None:
            stacks.setdefault((rec["well"], rec["site"], rec["channel"], rec["t"]), {})[rec["z"]] = rec["z_um"]
    steps = []
    for planes in stacks.values():
        ordered = [planes[z] for z in sorted(planes)]
        steps += [abs(b - a) for a, b in zip(ordered, ordered[1:], strict=False) if b != a]
    return positive_or_none(round(statistics.median(steps), 6)) if steps else None


def time_interval_s(records: list[dict]) -> float | None:
    """The median step between the starts (earliest record ``Time``) of consecutive time points."""
    starts: dict[int, float] = {}
    for rec in records:
        if rec.get("time_s") is not None:
            starts[rec["t"]] = min(rec["time_s"], starts.get(rec["t"], rec["time_s"]))
    ordered = [starts[t] for t in sorted(starts)]
    steps = [b - a for a, b in zip(ordered, ordered[1:], strict=False) if b > a]
    return positive_or_none(round(statistics.median(steps), 3)) if steps else None


def parse_mes(path: Path | str, data: bytes | None = None) -> dict:
    """Channel names and colours (``RRGGBB``) and the z slice length (µm) of a measurement setting (``.mes``)."""
    meta: dict = {"channel_names": {}, "channel_colors": {}, "slice_length_um": None}
    for element in _parse_xml(path, data).iter():
        tag = element.tag.rsplit("}", 1)[-1]
        attrs = _attrs(element)
        if tag == "Channel" and attrs.get("Ch", "").strip().isdigit():  # in <bts:ChannelList>
            channel = int(attrs["Ch"])
            if attrs.get("Target", "").strip():
                meta["channel_names"].setdefault(channel, attrs["Target"].strip())
            colour = hex_colour(attrs.get("Color"))
            if colour is not None:
                meta["channel_colors"].setdefault(channel, colour)
        elif tag.startswith("ActionAcquire") and meta["slice_length_um"] is None:
            meta["slice_length_um"] = positive_or_none(attrs.get("SliceLength"))
    return meta


def parse_mrf(path: Path | str, data: bytes | None = None) -> dict:
    """Channel names, pixel size (µm) and image shape (Y, X) from a ``MeasurementDetail.mrf``."""
    meta: dict = {"channel_names": {}, "pixel_size_um": None, "image_shape": None, "setting": None}
    root = _parse_xml(path, data)
    setting = _attrs(root).get("MeasurementSettingFileName", "").strip()
    if setting and "/" not in setting.replace("\\", "/") and setting not in (".", ".."):
        meta["setting"] = setting
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] != "MeasurementChannel":
            continue
        attrs = _attrs(element)
        channel = attrs.get("Ch", "")
        if channel.isdigit() and attrs.get("Target", "").strip():
            meta["channel_names"][int(channel)] = attrs["Target"].strip()
        if meta["pixel_size_um"] is None:
            meta["pixel_size_um"] = positive_or_none(attrs.get("HorizontalPixelDimension"))
        x, y = attrs.get("HorizontalPixels", ""), attrs.get("VerticalPixels", "")
        if meta["image_shape"] is None and x.isdigit() and y.isdigit():
            meta["image_shape"] = (int(y), int(x))
    return meta


def _read_setting(source: PlateSource, name: str | None) -> dict:
    """:func:`parse_mes` of the measurement setting the ``.mrf`` names; empty values when it is absent
    or unreadable (logged: the plate opens without its names and colours)."""
    empty = {"channel_names": {}, "channel_colors": {}, "slice_length_um": None}
    if name is None or not source.is_file(name):
        return empty
    try:
        if source.remote:
            return parse_mes(source.join(name), source.read_bytes(name))
        return parse_mes(source.path(name))
    except (PlateLayoutError, OSError) as exc:
        log.warning("%s: cannot read the measurement setting %s: %s", source.root, name, exc)
        return empty


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
    meta = meta or {"channel_names": {}, "pixel_size_um": None, "image_shape": None, "setting": None}
    setting = _read_setting(source, meta["setting"])
    channel_names = setting["channel_names"] | meta["channel_names"]  # the .mrf's Target first
    z_step = z_spacing_um(listed) or setting["slice_length_um"]
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
        channel_names=channel_names,
        pixel_size_um=meta["pixel_size_um"],
        z_spacing_um=z_step if len({r["z"] for r in listed if not r["projection"]}) > 1 else None,
        time_interval_s=time_interval_s(listed),
        channel_colors=setting["channel_colors"],
        unrecognized=unrecognized,
        gaps=gaps,
        image_shape=meta["image_shape"],
        problems=problems,
        projections=build_table(projections),
        storage_options=source.storage_options,
    )
