"""Detect a plate's layout and build its :class:`PlateIndex`."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from hcsgraph.plate import cellvoyager, imagexpress, omezarr, operaphenix
from hcsgraph.plate import pattern as pattern_layout
from hcsgraph.plate.index import PlateIndex, PlateLayoutError
from hcsgraph.plate.problems import summarize
from hcsgraph.plate.scan import scan_files

LOOKED_FOR = (
    "an OME-Zarr HCS plate (zarr.json or .zattrs with 'plate' metadata), "
    "an Opera Phenix/Operetta index (Index.idx.xml or Index.xml, also under Images/), "
    "a Yokogawa CellVoyager MeasurementData.mlf, "
    "an ImageXpress .HTD file or file names like A01_s1_w1.tif"
)


def open_plate(path: str | os.PathLike, pattern: str | re.Pattern | None = None) -> PlateIndex:
    """Index the plate at ``path``: ImageXpress, Opera Phenix/Operetta, CellVoyager, OME-Zarr (0.4/0.5), or ``pattern``.

    ``pattern`` is a regular expression with named groups (``well`` or ``row`` + ``column``; optional
    ``site``, ``channel``, ``z``, ``t``) for any other layout; see :mod:`hcsgraph.plate.pattern`.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(errno.ENOENT, "plate directory not found", str(root))
    if not root.is_dir():
        raise PlateLayoutError(f"{root} is a file; open_plate expects the plate's directory (or .zarr group)")
    root = root.resolve()
    index = _parse(root, pattern)
    index.probe_images()
    return index


def _parse(root: Path, pattern: str | re.Pattern | None) -> PlateIndex:
    if pattern is None and omezarr.looks_like(root):
        return omezarr.parse(root)
    scan = scan_files(root)
    if pattern is not None:
        return pattern_layout.parse(root, pattern, scan)
    if operaphenix.looks_like(root):
        return operaphenix.parse(root, scan)
    if cellvoyager.looks_like(root):
        return cellvoyager.parse(root, scan)
    if imagexpress.looks_like(root, scan):
        return imagexpress.parse(root, scan)
    found = "; ".join(summarize(scan.problems))
    raise PlateLayoutError(f"no plate layout recognised in {root}: looked for {LOOKED_FOR}; "
                           "for another layout pass pattern=<regex with named groups well, site, channel, z, t>"
                           + (f" (while listing the folder: {found})" if found else ""))
