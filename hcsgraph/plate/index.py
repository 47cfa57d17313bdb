"""The plate index: one row per image plane, plus plate metadata.

Coordinates are 1-based (site, channel, z, t) as microscopes number them; rows are letters
('A'..'Z', then 'AA'..'AF' for 1536-well plates) and columns are 1-based integers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from natsort import natsorted

from hcsgraph.io import location
from hcsgraph.plate.problems import UNRECOGNIZED, PlateProblem, summarize

log = logging.getLogger(__name__)

COLUMNS = ["row", "column", "well", "site", "channel", "z", "t", "path"]
DIMENSIONS = ["site", "channel", "z", "t"]
_WELL_RE = re.compile(r"^([A-Za-z]{1,2})0*(\d{1,3})$")


class PlateLayoutError(ValueError):
    """A directory holds no plate layout that hcsgraph recognises, or its index is invalid."""


class DuplicatePlaneError(PlateLayoutError):
    """Two files map to the same plane (well, site, channel, z, t); the message names both."""


def row_letter(index: int) -> str:
    """Row letters from a 1-based row number: 1 → 'A', 26 → 'Z', 27 → 'AA', 32 → 'AF'."""
    if index < 1:
        raise ValueError(f"row number {index} must be >= 1")
    letters = ""
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("A") + rem) + letters
    return letters


def row_number(letters: str) -> int:
    """The 1-based row number of row letters: 'A' → 1, 'AF' → 32."""
    number = 0
    for char in letters.upper():
        number = number * 26 + ord(char) - ord("A") + 1
    return number


def split_well(well: str) -> tuple[str, int]:
    """'A01' / 'a1' / 'AF48' → ('A', 1) / ('A', 1) / ('AF', 48); a bad name raises ValueError."""
    match = _WELL_RE.match(str(well).strip())
    if not match or int(match.group(2)) < 1:
        raise ValueError(f"{well!r} is not a well name (expected a row letter and a column number, e.g. 'A01')")
    return match.group(1).upper(), int(match.group(2))


def well_name(row: str | int, column: int) -> str:
    """The canonical well name: ('A', 1) or (1, 1) → 'A01'."""
    letters = row_letter(int(row)) if isinstance(row, int | np.integer) or str(row).isdigit() else str(row).upper()
    return f"{letters}{int(column):02d}"


def empty_table() -> pd.DataFrame:
    """An index table without rows."""
    return pd.DataFrame({c: pd.Series(dtype=object if c in ("row", "well", "path") else np.int64) for c in COLUMNS})


def build_table(records: Iterable[Sequence[Any]]) -> pd.DataFrame:
    """A sorted index table from ``(well, site, channel, z, t, path)`` records; well names are normalised.

    Two records for the same plane raise :class:`DuplicatePlaneError` naming both files.
    """
    frame = pd.DataFrame(list(records), columns=["well", "site", "channel", "z", "t", "path"])
    if frame.empty:
        return empty_table()
    split = {w: split_well(w) for w in frame["well"].unique()}
    frame["row"] = frame["well"].map(lambda w: split[w][0])
    frame["column"] = frame["well"].map(lambda w: split[w][1]).astype(np.int64)
    frame["well"] = frame["well"].map(lambda w: f"{split[w][0]}{split[w][1]:02d}")
    for dim in DIMENSIONS:
        frame[dim] = frame[dim].astype(np.int64)
    frame["path"] = frame["path"].astype(str)
    frame["_row_n"] = frame["row"].map(row_number)
    frame = frame.sort_values(["_row_n", "column", "site", "t", "channel", "z", "path"], kind="stable")
    _refuse_duplicates(frame)
    return frame.drop(columns="_row_n")[COLUMNS].reset_index(drop=True)


def _refuse_duplicates(frame: pd.DataFrame) -> None:
    keys = ["well", *DIMENSIONS]
    repeated = frame[frame.duplicated(keys, keep=False)]
    if repeated.empty:
        return
    clashes = []
    for plane, group in repeated.groupby(keys, sort=False):
        well, site, channel, z, t = plane
        files = " and ".join(group["path"].tolist())
        clashes.append(f"well {well} site {site} channel {channel} z {z} t {t}: {files}")
    shown = "; ".join(clashes[:5]) + (f"; and {len(clashes) - 5} more" if len(clashes) > 5 else "")
    raise DuplicatePlaneError(
        f"{len(clashes)} plane(s) come from more than one file (each plane must come from exactly one file; "
        f"remove or move the extra copies): {shown}")


def find_gaps(
    table: pd.DataFrame,
    *,
    wells: Iterable[str] | None = None,
    sites: Iterable[int] | None = None,
    channels: Iterable[int] | None = None,
    z: Iterable[int] | None = None,
    t: Iterable[int] | None = None,
) -> pd.DataFrame:
    """Planes expected but absent: the product of the expected wells/sites/channels/z/t minus the table.

    Each argument defaults to the values seen in the table (so a gap is a hole in the product).
    """
    expected = {
        "well": natsorted(set(wells) | set(table["well"])) if wells is not None else natsorted(table["well"].unique()),
        "site": sorted(set(sites) if sites is not None else set(table["site"])),
        "channel": sorted(set(channels) if channels is not None else set(table["channel"])),
        "z": sorted(set(z) if z is not None else set(table["z"])),
        "t": sorted(set(t) if t is not None else set(table["t"])),
    }
    keys = ["well", *DIMENSIONS]
    if table.empty and not expected["well"]:
        return pd.DataFrame(columns=keys)
    full = pd.MultiIndex.from_product([expected[k] for k in keys], names=keys)
    present = pd.MultiIndex.from_frame(table[keys])
    missing = full.difference(present)
    return missing.to_frame(index=False).astype({d: np.int64 for d in DIMENSIONS}).reset_index(drop=True)


_HEX_RE = re.compile(r"^#?(?:[0-9A-Fa-f]{8}|[0-9A-Fa-f]{6})$")


def physical_size(value: Any, what: str = "value") -> float | None:
    """A pixel size, z spacing or time interval as a positive float, or None when unknown.

    ``None`` stays None (unknown: never a made-up 1.0); anything else must be a finite number > 0.
    """
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}={value!r} must be a number") from None
    if not np.isfinite(number) or number <= 0:
        raise ValueError(f"{what}={value!r} must be a finite number > 0 (or None when unknown)")
    return number


def positive_or_none(value: Any, factor: float = 1.0) -> float | None:
    """``value * factor`` when ``value`` is a finite number > 0, else None: for values read from
    instrument metadata, where a missing, zero or garbled entry means "unknown"."""
    try:
        number = float(value) * factor
    except (TypeError, ValueError):
        return None
    if not np.isfinite(number) or number <= 0:
        return None
    return float(f"{number:.12g}")  # 2.99E-07 m → 0.299 µm, not 0.29900000000000004


def hex_colour(value: Any) -> str | None:
    """A display colour as upper-case ``RRGGBB``, from ``RRGGBB``, ``#RRGGBB`` or an instrument's ARGB
    ``#AARRGGBB`` (Yokogawa, .NET: the alpha is dropped); None for anything else."""
    text = str(value or "").strip()
    if not _HEX_RE.match(text):
        return None
    digits = text.lstrip("#").upper()
    return digits[2:] if len(digits) == 8 else digits


class PlateIndex:
    """Every image plane of a plate, and the plate's metadata.

    ``table`` has the columns row (str), column (int), well ('A01'), site, channel, z, t (1-based ints)
    and path (a file path, or for OME-Zarr input a plane reference ``<array>#t=0,c=1,z=0`` that
    :func:`hcsgraph.plate.reader.read_plane` reads). ``gaps`` lists the planes the layout expected but
    did not find; ``unrecognized`` the files the parser could not place; ``problems`` every finding
    (:class:`hcsgraph.plate.problems.PlateProblem`: unrecognised, unreadable or odd files, dangling
    symlinks, skipped folders, ...). ``projections`` holds planes that are not part of the z-stack (the
    ``ZStep_0`` projections of an ImageXpress z-series), with the same columns as ``table`` and z = 0.
    Image shape and dtype come from the instrument metadata where it has them, else from the most
    common (shape, dtype) over a sample of files (:func:`hcsgraph.plate.probe.probe_images`);
    :func:`open_plate` decides them at once, a hand-built index on first access. The object is small
    and picklable.

    Physical metadata, from the instrument's metadata files (None where they do not say; never a
    made-up 1.0): ``pixel_size_um`` (x and y, µm), ``z_spacing_um`` (µm between z planes),
    ``time_interval_s`` (seconds between time points), ``channel_names`` (channel → name; a
    ``channel_<n>`` placeholder where unnamed) and ``channel_colors`` (channel → ``RRGGBB``, only the
    channels whose colour the instrument gives). ``open_plate(..., pixel_size_um=0.65)`` overrides them.

    ``root`` and the paths are local paths, or URLs (``s3://bucket/plates/p07/...``, never with
    credentials in them) for a plate in object storage; then ``storage_options`` (a
    :class:`~hcsgraph.io.location.StorageOptions`, None for fsspec's default credentials) says how to
    reach them: pass it to :func:`hcsgraph.plate.reader.read_plane` (``read_plane(path, out,
    storage_options=index.storage_options)``). It pickles with the index, so workers get it; ``repr``
    never shows a credential.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        *,
        name: str,
        root: str,
        source_format: str,
        channel_names: dict[int, str] | None = None,
        pixel_size_um: float | None = None,
        z_spacing_um: float | None = None,
        time_interval_s: float | None = None,
        channel_colors: Mapping[int, str] | None = None,
        unrecognized: Sequence[str] = (),
        gaps: pd.DataFrame | None = None,
        image_shape: tuple[int, int] | None = None,
        dtype: np.dtype | str | None = None,
        problems: Sequence[PlateProblem] = (),
        projections: pd.DataFrame | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        missing = [c for c in COLUMNS if c not in table.columns]
        if missing:
            raise PlateLayoutError(f"plate index of {root} lacks the columns {missing}")
        self.table = table[COLUMNS].reset_index(drop=True)
        self.name = name
        self.root = str(root)
        self.storage_options = location.storage_options(storage_options)
        self.source_format = source_format
        channels = sorted(int(c) for c in self.table["channel"].unique())
        names = dict(channel_names or {})
        self.channel_names = {c: names.get(c, f"channel_{c}") for c in channels} | names
        self.pixel_size_um = physical_size(pixel_size_um, "pixel_size_um")
        self.z_spacing_um = physical_size(z_spacing_um, "z_spacing_um")
        self.time_interval_s = physical_size(time_interval_s, "time_interval_s")
        self.channel_colors = {int(c): colour for c, value in (channel_colors or {}).items()
                               if (colour := hex_colour(value)) is not None}
        self.unrecognized = list(unrecognized)
        self.problems: list[PlateProblem] = [PlateProblem(UNRECOGNIZED, f) for f in self.unrecognized]
        self.problems += list(problems)
        self.gaps = find_gaps(self.table) if gaps is None else gaps.reset_index(drop=True)
        self.projections = empty_table() if projections is None else projections[COLUMNS].reset_index(drop=True)
        self._image_shape = None if image_shape is None else tuple(int(v) for v in image_shape)
        self._dtype = None if dtype is None else np.dtype(dtype)
        self._probed = self._image_shape is not None and self._dtype is not None
        self._probe_error: str | None = None
        if self.unrecognized:
            shown = ", ".join(self.unrecognized[:5]) + (" ..." if len(self.unrecognized) > 5 else "")
            log.warning("%s: %d file(s) not recognised as %s images: %s",
                        self.shown_root, len(self.unrecognized), source_format, shown)
        self._log_problems([p for p in self.problems if p.kind != UNRECOGNIZED])
        if len(self.gaps):
            log.warning("%s: %d expected plane(s) missing (see PlateIndex.gaps)", self.shown_root, len(self.gaps))

    @property
    def shown_root(self) -> str:
        """``root`` as messages show it (a URL's ``user:secret@`` as ``***@``)."""
        return location.redact(self.root)

    def _log_problems(self, problems: list[PlateProblem]) -> None:
        for line in summarize(problems):
            log.warning("%s: %s (see PlateIndex.problems)", self.shown_root, line)

    # -- image shape and dtype -------------------------------------------------------------
    def probe_images(self, sizes: Mapping[str, int] | None = None) -> None:
        """Decide the image shape and dtype now (metadata, else a sample of files); adds to ``problems``.

        :func:`open_plate` calls it; it runs once. Never raises: an undecidable shape raises on access.
        ``sizes``: file sizes by path where already known (a URL plate's listing), to save requests.
        """
        if self._probed:
            return
        from hcsgraph.plate.probe import probe_images

        paths = self.table["path"].tolist() or self.projections["path"].tolist()
        info = probe_images(paths, shape=self._image_shape, dtype=self._dtype, relative_to=self.root,
                            storage_options=self.storage_options, sizes=sizes)
        self._probed = True
        self._image_shape, self._dtype, self._probe_error = info.shape, info.dtype, info.error
        self.problems += info.problems
        self._log_problems(info.problems)

    def _undecided(self, what: str) -> PlateLayoutError:
        return PlateLayoutError(f"cannot tell the image {what} of plate {self.shown_root}: {self._probe_error or 'no images'}")

    @property
    def image_shape(self) -> tuple[int, int]:
        """(Y, X) of one plane: from the instrument metadata, else the most common over sampled files."""
        self.probe_images()
        if self._image_shape is None:
            raise self._undecided("shape")
        return self._image_shape

    @property
    def dtype(self) -> np.dtype:
        """The pixel dtype: from the instrument metadata, else the most common over sampled files."""
        self.probe_images()
        if self._dtype is None:
            raise self._undecided("dtype")
        return self._dtype

    # -- plate geometry --------------------------------------------------------------------
    @property
    def wells(self) -> list[str]:
        """Wells with at least one image, naturally sorted ('A02' before 'A10', 'Z01' before 'AA01')."""
        return sorted(self.table["well"].unique(), key=lambda w: (row_number(split_well(w)[0]), split_well(w)[1]))

    @property
    def rows(self) -> list[str]:
        """Row letters in use, in plate order."""
        return sorted(self.table["row"].unique(), key=row_number)

    @property
    def columns(self) -> list[int]:
        """Column numbers in use, ascending."""
        return sorted(int(c) for c in self.table["column"].unique())

    @property
    def sites(self) -> list[int]:
        return sorted(int(v) for v in self.table["site"].unique())

    @property
    def channels(self) -> list[int]:
        return sorted(int(v) for v in self.table["channel"].unique())

    @property
    def z_planes(self) -> list[int]:
        return sorted(int(v) for v in self.table["z"].unique())

    @property
    def timepoints(self) -> list[int]:
        return sorted(int(v) for v in self.table["t"].unique())

    def select(self, **criteria: Any) -> pd.DataFrame:
        """Rows of the table matching ``column=value`` (or a list of values), e.g. ``select(well="A01")``."""
        mask = np.ones(len(self.table), dtype=bool)
        for key, value in criteria.items():
            if key not in self.table.columns:
                raise KeyError(f"{key!r} is not an index column; expected one of {COLUMNS}")
            values = value if isinstance(value, list | tuple | set) else [value]
            mask &= self.table[key].isin(values).to_numpy()
        return self.table[mask]

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        shape = "x".join(map(str, self._image_shape)) if self._image_shape else "?"
        return (
            f"PlateIndex({self.name!r}, format={self.source_format}, planes={len(self)}, wells={len(self.wells)}, "
            f"sites={len(self.sites)}, channels={[self.channel_names.get(c) for c in self.channels]}, "
            f"z={len(self.z_planes)}, t={len(self.timepoints)}, shape={shape}, "
            f"gaps={len(self.gaps)}, unrecognized={len(self.unrecognized)}, "
            f"problems={len(self.problems) - len(self.unrecognized)}, root={self.shown_root!r})"
        )


# Files that sit beside images and are not images themselves: never reported as unrecognised.
METADATA_SUFFIXES = (".htd", ".xml", ".csv", ".json", ".txt", ".log", ".db", ".md", ".ini", ".xsd", ".dtd")


def is_metadata_file(name: str) -> bool:
    """True for sidecar files (index XML, .HTD, CSV/JSON tables, text) that are not images."""
    return name.lower().endswith(METADATA_SUFFIXES)
