"""Any other layout: a regular expression with named groups.

The pattern is matched (``re.fullmatch``) against each file's path relative to the plate root, with
``/`` separators, and then against the bare file name. Groups: ``well`` (``A01``, ``a1``) or ``row``
(letters or a 1-based number) and ``column``; optional ``site``, ``channel``, ``z``, ``t`` (integers,
1 when absent). A non-numeric ``channel`` (``DAPI``) becomes a channel number in natural order, and the
text becomes its channel name. Example: ``r"(?P<well>[A-P]\\d{2})_f(?P<site>\\d+)_(?P<channel>\\w+)\\.tif"``.
"""

from __future__ import annotations

import re
from pathlib import Path

from natsort import natsorted

from hcsgraph.plate.index import (
    DuplicatePlaneError,
    PlateIndex,
    PlateLayoutError,
    build_table,
    is_metadata_file,
    split_well,
    well_name,
)
from hcsgraph.plate.scan import FileScan
from hcsgraph.plate.source import PlateSource, as_source

NAME = "pattern"


def compile_pattern(pattern: str | re.Pattern) -> re.Pattern:
    """Compile and check a layout pattern: it needs ``well`` or both ``row`` and ``column``."""
    try:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
    except re.error as exc:
        raise PlateLayoutError(f"invalid plate pattern {pattern!r}: {exc}") from exc
    groups = set(regex.groupindex)
    if "well" not in groups and not {"row", "column"} <= groups:
        raise PlateLayoutError(
            f"plate pattern {regex.pattern!r} needs a named group 'well', or both 'row' and 'column' "
            f"(optional: site, channel, z, t); it has {sorted(groups) or 'none'}"
        )
    return regex


def parse(source: PlateSource | Path, pattern: str | re.Pattern, scan: FileScan | None = None) -> PlateIndex:
    """Index the files under the folder whose relative path or name matches ``pattern``."""
    source = as_source(source)
    regex = compile_pattern(pattern)
    scan = scan or source.scan()
    matches, unrecognized = [], []
    for rel in scan.files:
        name = rel.rpartition("/")[2]
        match = regex.fullmatch(rel) or regex.fullmatch(name)
        if match is None:
            if not is_metadata_file(name):
                unrecognized.append(rel)
            continue
        g = match.groupdict()
        try:
            if g.get("well"):
                well = well_name(*split_well(g["well"]))
            else:
                row = g["row"]
                well = well_name(int(row) if row.isdigit() else row.upper(), int(g["column"]))
        except (TypeError, ValueError):
            unrecognized.append(rel)
            continue
        matches.append((well, g, source.join(rel)))
    raw_channels = {g.get("channel") for _, g, _ in matches if g.get("channel")}
    channel_names: dict[int, str] = {}
    if raw_channels and not all(c.isdigit() for c in raw_channels):
        numbers = {label: i for i, label in enumerate(natsorted(raw_channels), 1)}
        channel_names = {i: label for label, i in numbers.items()}
    else:
        numbers = {c: int(c) for c in raw_channels}
    records = []
    for well, g, path in matches:
        try:
            dims = [int(g[k]) if g.get(k) else 1 for k in ("site", "z", "t")]
        except ValueError as exc:
            raise PlateLayoutError(f"{path}: site, z and t must be integers in plate pattern {regex.pattern!r}") from exc
        channel = numbers[g["channel"]] if g.get("channel") else 1
        records.append((well, dims[0], channel, dims[1], dims[2], path))
    try:
        table = build_table(records)
    except DuplicatePlaneError as exc:
        raise DuplicatePlaneError(f"{exc}; does the plate pattern {regex.pattern!r} capture every part of the "
                                  "name that varies (site, channel, z, t)?") from None
    return PlateIndex(
        table,
        name=source.name,
        root=source.root,
        source_format=NAME,
        channel_names=channel_names,
        unrecognized=unrecognized,
        problems=scan.problems,
        storage_options=source.storage_options,
    )
