"""ImageXpress (MetaXpress) plates: an ``.HTD`` file and names like ``Plate_A01_s1_w2_z003_t001.tif``.

Handled: the ``.HTD`` keys (wavelength names, well and site selection, z-steps, time points); an optional
plate-name prefix, separated from the well by ``_``; the well (upper-case row ``A``..``Z`` or
``AA``..``AF`` and a two-digit column); ``_s`` (site), ``_w`` (wavelength), ``_z`` and ``_t`` tokens,
each optional (a missing token means 1); a MetaXpress GUID right before the extension (after the
wavelength, or after the well or site in single-wavelength exports: ``Plate1_C03<GUID>.tif``);
``TimePoint_N`` and ``ZStep_N`` folders; ``_thumb`` thumbnails are skipped.

A z-series export's ``ZStep_0`` folder holds projections (one per site, channel and time point), not a
plane of the stack: they are kept out of ``PlateIndex.table`` and listed in ``PlateIndex.projections``
(z = 0). A plate holding only ``ZStep_0`` images indexes them as its images (z = 1) and says so in
``PlateIndex.problems``.

The ``.HTD`` names the channels but gives no pixel size. MetaXpress writes the calibration into each
TIFF's description (MetaSeries XML: ``<prop id="spatial-calibration-x" type="float" value="0.65">``
with ``spatial-calibration-units``); the pixel size is read from there (one image of a local plate).
A plate without it (a copy whose TIFFs lost their descriptions, a URL plate) has an unknown pixel size
(None; ``open_plate(..., pixel_size_um=)`` supplies it). No z spacing, time interval or colours.
"""

from __future__ import annotations

import csv
import io
import logging
import posixpath
import re
from pathlib import Path

from hcsgraph.plate.index import (
    PlateIndex,
    build_table,
    find_gaps,
    is_metadata_file,
    positive_or_none,
    row_letter,
)
from hcsgraph.plate.problems import PROJECTIONS_ONLY, PlateProblem
from hcsgraph.plate.scan import FileScan
from hcsgraph.plate.source import PlateSource, as_source

log = logging.getLogger(__name__)

NAME = "imagexpress"
_PROP_RE = re.compile(r'<prop\s+id="(?P<id>[^"]+)"[^>]*?\svalue="(?P<value>[^"]*)"', re.IGNORECASE)
_UNIT_TO_UM = {"um": 1.0, "µm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "nm": 1e-3, "mm": 1e3}

GUID = r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}"
FILE_RE = re.compile(
    r"^(?:(?P<prefix>.*?)_)??"  # an optional plate name, then '_'
    r"(?P<well>(?-i:A[A-F]|[A-Z])\d{2})"  # an upper-case well token: A01 .. AF48
    r"(?:_s(?P<site>\d+))?"
    r"(?:_w(?P<channel>\d+))?"
    r"(?:_z(?P<z>\d+))?"
    r"(?:_t(?P<t>\d+))?"
    rf"(?P<guid>{GUID})?"
    r"\.tiff?$",
    re.IGNORECASE,
)
TIMEPOINT_DIR_RE = re.compile(r"^timepoint_(\d+)$", re.IGNORECASE)
ZSTEP_DIR_RE = re.compile(r"^zstep_(\d+)$", re.IGNORECASE)
MAX_COLUMNS = 48  # a 1536-well plate: rows A..AF, columns 1..48


def find_htd(source: PlateSource | Path) -> str | None:
    """The relative path of the plate's ``.HTD`` file, in the folder or one folder below it (e.g.
    ``TimePoint_1``), if any."""
    source = as_source(source)
    folders, _ = source.entries()
    for directory in ("", *sorted(name for name in folders if not name.startswith("."))):
        _, files = source.entries(directory)
        candidates = sorted(name for name in files if name.lower().endswith(".htd"))
        if candidates:
            return f"{directory}/{candidates[0]}" if directory else candidates[0]
    return None


def parse_htd_text(text: str) -> dict[str, list[str]]:
    """The ``.HTD`` key/value lines of ``text``: ``{"WaveName1": ["DAPI"], "XSites": ["2"], ...}``."""
    values: dict[str, list[str]] = {}
    for line in csv.reader(io.StringIO(text, newline=""), skipinitialspace=True):
        if line:
            values[line[0].strip()] = [v.strip() for v in line[1:]]
    return values


def _int(htd: dict[str, list[str]], key: str, default: int) -> int:
    try:
        return int(htd[key][0])
    except (KeyError, IndexError, ValueError):
        return default


def _flag(htd: dict[str, list[str]], key: str) -> bool:
    return bool(htd.get(key)) and htd[key][0].upper() == "TRUE"


def htd_metadata(htd: dict[str, list[str]]) -> dict:
    """Channel names, expected wells/sites/z/t and the description from parsed ``.HTD`` values."""
    channel_names = {}
    n_waves = _int(htd, "NWavelengths", 1) if _flag(htd, "Waves") or "NWavelengths" in htd else 1
    for i in range(1, n_waves + 1):
        if htd.get(f"WaveName{i}"):
            channel_names[i] = htd[f"WaveName{i}"][0]
    wells = []
    for r in range(1, _int(htd, "YWells", 0) + 1):
        selection = htd.get(f"WellsSelection{r}", [])
        wells += [f"{row_letter(r)}{c:02d}" for c, flag in enumerate(selection, 1) if flag.upper() == "TRUE"]
    if _flag(htd, "Sites"):
        n_sites = sum(
            flag.upper() == "TRUE" for r in range(1, _int(htd, "YSites", 1) + 1) for flag in htd.get(f"SiteSelection{r}", [])
        ) or _int(htd, "XSites", 1) * _int(htd, "YSites", 1)
    else:
        n_sites = 1
    return {
        "channel_names": channel_names,
        "n_channels": n_waves,
        "wells": wells,
        "n_sites": n_sites,
        "n_z": _int(htd, "ZSteps", 1) if _flag(htd, "ZSeries") or "ZSteps" in htd else 1,
        "n_t": _int(htd, "TimePoints", 1),
        "description": (htd.get("Description") or [""])[0],
    }


def metaseries_pixel_size_um(description: str) -> float | None:
    """The pixel size (µm) in a MetaSeries/MetaXpress TIFF description, or None (absent, in pixels)."""
    props = {m["id"].lower(): m["value"] for m in _PROP_RE.finditer(description or "")}
    unit = props.get("spatial-calibration-units", "um").strip().lower()
    if "spatial-calibration-x" not in props or unit not in _UNIT_TO_UM:
        return None
    return positive_or_none(props["spatial-calibration-x"], _UNIT_TO_UM[unit])


def tiff_pixel_size_um(path: str) -> float | None:
    """:func:`metaseries_pixel_size_um` of a local TIFF's first page; None when it cannot be read."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return metaseries_pixel_size_um(tif.pages[0].description)
    except Exception as exc:  # noqa: BLE001 - a bad file is the probe's to report, not the index's
        log.debug("%s: no pixel size read: %s", path, exc)
        return None


def parse_name(name: str) -> dict | None:
    """The well/site/channel/z/t of an ImageXpress file name, or None when it is not one (or a thumbnail)."""
    if "_thumb" in name.lower():
        return None
    match = FILE_RE.match(name)
    if match is None or not 1 <= int(match["well"][-2:]) <= MAX_COLUMNS:
        return None
    return match.groupdict()


def looks_like(source: PlateSource | Path, scan: FileScan | None = None) -> bool:
    """True when the folder has an ``.HTD`` file, or most of its TIFFs have ImageXpress names (_s, _w or a GUID)."""
    source = as_source(source)
    if find_htd(source) is not None:
        return True
    files = (scan or source.scan()).files
    tiffs = [f.rsplit("/", 1)[-1] for f in files if f.lower().endswith((".tif", ".tiff"))]
    if not tiffs:
        return False
    hits = 0
    for name in tiffs:
        parts = parse_name(name)
        hits += parts is not None and any(parts[k] is not None for k in ("site", "channel", "guid"))
    return hits >= 0.5 * len(tiffs)


def parse(source: PlateSource | Path, scan: FileScan | None = None) -> PlateIndex:
    """Index an ImageXpress plate folder (``scan``: its files, when already listed)."""
    source = as_source(source)
    scan = scan or source.scan()
    htd_rel = find_htd(source)
    meta = htd_metadata(parse_htd_text(source.read_bytes(htd_rel).decode("utf-8", errors="replace"))) if htd_rel else None
    records, projections, unrecognized, prefixes = [], [], [], set()
    for rel in scan.files:
        directory, _, name = rel.rpartition("/")
        if "_thumb" in name.lower():
            continue
        parts = parse_name(name)
        if parts is None:
            if not is_metadata_file(name):
                unrecognized.append(rel)
            continue
        folder_t = folder_z = None
        for folder in directory.split("/") if directory else ():
            if m := TIMEPOINT_DIR_RE.match(folder):
                folder_t = int(m.group(1))
            elif m := ZSTEP_DIR_RE.match(folder):
                folder_z = int(m.group(1))
        site = int(parts["site"]) if parts["site"] else 1
        channel = int(parts["channel"]) if parts["channel"] else 1
        t = int(parts["t"]) if parts["t"] else (folder_t or 1)
        if parts["prefix"]:
            prefixes.add(parts["prefix"])
        if parts["z"] is None and folder_z == 0:  # ZStep_0: a projection, not a plane of the stack
            projections.append((parts["well"], site, channel, 0, t, source.join(rel)))
            continue
        z = int(parts["z"]) if parts["z"] else (folder_z or 1)
        records.append((parts["well"], site, channel, z, t, source.join(rel)))
    problems = list(scan.problems)
    if not records and projections:
        problems.append(PlateProblem(PROJECTIONS_ONLY, "ZStep_0", "the plate holds only ZStep_0 projections; "
                                                                   "they are indexed as its images (z = 1)"))
        records, projections = [(*r[:3], 1, *r[4:]) for r in projections], []
    table = build_table(records)
    gaps = None
    if meta is not None and not table.empty:
        observed_z = set(table["z"])
        gaps = find_gaps(
            table,
            wells=meta["wells"] or None,
            sites=range(1, meta["n_sites"] + 1),
            channels=range(1, meta["n_channels"] + 1),
            # A z-series whose files hold one plane each (a projection) does not expect the other steps.
            z=range(1, meta["n_z"] + 1) if observed_z != {1} else None,
            t=range(1, meta["n_t"] + 1),
        )
    if htd_rel is not None:
        name = posixpath.splitext(htd_rel.rpartition("/")[2])[0]
    elif len(prefixes) == 1:
        name = next(iter(prefixes))
    else:
        name = source.name
    pixel_size = None
    if not source.remote and not table.empty:
        pixel_size = tiff_pixel_size_um(str(table["path"].iloc[0]))
    return PlateIndex(
        table,
        name=name,
        root=source.root,
        source_format=NAME,
        channel_names=meta["channel_names"] if meta else None,
        pixel_size_um=pixel_size,
        unrecognized=unrecognized,
        gaps=gaps,
        problems=problems,
        projections=build_table(projections),
        storage_options=source.storage_options,
    )
