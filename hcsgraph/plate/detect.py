"""Detect a plate's layout and build its :class:`PlateIndex`."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hcsgraph.io import location
from hcsgraph.plate import cellvoyager, imagexpress, omezarr, operaphenix
from hcsgraph.plate import pattern as pattern_layout
from hcsgraph.plate.index import PlateIndex, PlateLayoutError, physical_size
from hcsgraph.plate.problems import summarize
from hcsgraph.plate.source import PlateSource, missing_error

LOOKED_FOR = (
    "an OME-Zarr HCS plate (zarr.json or .zattrs with 'plate' metadata), "
    "an Opera Phenix/Operetta index (Index.idx.xml or Index.xml, also under Images/), "
    "a Yokogawa CellVoyager MeasurementData.mlf, "
    "an ImageXpress .HTD file or file names like A01_s1_w1.tif"
)


def open_plate(path: str | os.PathLike, pattern: str | re.Pattern | None = None, *,
               storage_options: Mapping[str, Any] | None = None, pixel_size_um: float | None = None,
               z_spacing_um: float | None = None, time_interval_s: float | None = None) -> PlateIndex:
    """Index the plate at ``path``: ImageXpress, Opera Phenix/Operetta, CellVoyager, OME-Zarr (0.4/0.5), or ``pattern``.

    ``pattern`` is a regular expression with named groups (``well`` or ``row`` + ``column``; optional
    ``site``, ``channel``, ``z``, ``t``) for any other layout; see :mod:`hcsgraph.plate.pattern`.

    ``path`` may be a URL (``s3://bucket/plates/p07``, any fsspec protocol): the folder is listed once
    (one paginated listing, not a request per file) and only the layout's metadata files are read.
    ``storage_options`` are fsspec's options for it (for S3: ``key``, ``secret``, ``token``,
    ``profile``, ``client_kwargs={"endpoint_url": ...}``); without them fsspec's usual credentials
    apply (``AWS_*`` variables, AWS config). A ``user:secret@`` in the URL is moved into the options.
    The index keeps the options (``PlateIndex.storage_options``, never shown by ``repr``) and its paths
    are URLs without credentials.

    ``pixel_size_um`` (x and y, µm), ``z_spacing_um`` (µm) and ``time_interval_s`` (seconds) set what
    the instrument's metadata lacks or gets wrong: a value given here wins over the metadata's. Left at
    None, they come from the metadata, and stay None (unknown) where it does not say.
    """
    overrides = {key: physical_size(value, key) for key, value in
                 (("pixel_size_um", pixel_size_um), ("z_spacing_um", z_spacing_um),
                  ("time_interval_s", time_interval_s)) if value is not None}
    text = os.fspath(path)
    if location.is_url(text):
        clean, from_url = location.split_credentials(text)
        options = location.storage_options({**from_url, **dict(storage_options or {})})
        source = PlateSource(clean.rstrip("/"), options)
        return _open(source, pattern, overrides)
    root = Path(location.local_path(text)).expanduser()
    if not root.exists():
        raise FileNotFoundError(errno.ENOENT, "plate directory not found", str(root))
    if not root.is_dir():
        raise PlateLayoutError(f"{root} is a file; open_plate expects the plate's directory (or .zarr group)")
    return _open(PlateSource(str(root.resolve())), pattern, overrides)


def _open(source: PlateSource, pattern: str | re.Pattern | None, overrides: dict[str, float]) -> PlateIndex:
    index = _parse(source, pattern)
    for key, value in overrides.items():  # the user's word wins over the instrument's metadata
        setattr(index, key, value)
    index.probe_images(source.sizes() if source.remote else None)
    return index


def _parse(source: PlateSource, pattern: str | re.Pattern | None) -> PlateIndex:
    if pattern is None and omezarr.looks_like(source):
        return omezarr.parse(source)
    scan = source.scan()
    if source.remote and not source.listing():
        kind = source.kind()
        if kind is None:
            raise missing_error(source)
        if kind == "file":
            raise PlateLayoutError(f"{source.root} is a file; open_plate expects the plate's folder (or .zarr group)")
    if pattern is not None:
        return pattern_layout.parse(source, pattern, scan)
    if operaphenix.looks_like(source):
        return operaphenix.parse(source, scan)
    if cellvoyager.looks_like(source):
        return cellvoyager.parse(source, scan)
    if imagexpress.looks_like(source, scan):
        return imagexpress.parse(source, scan)
    found = "; ".join(summarize(scan.problems))
    raise PlateLayoutError(f"no plate layout recognised in {source.root}: looked for {LOOKED_FOR}; "
                           "for another layout pass pattern=<regex with named groups well, site, channel, z, t>"
                           + (f" (while listing the folder: {found})" if found else ""))
