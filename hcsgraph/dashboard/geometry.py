"""Plate geometry: the standard formats, and the grid a set of wells is drawn on."""

from __future__ import annotations

from collections.abc import Iterable

from hcsgraph.plate.index import row_letter, row_number, split_well

FORMATS: dict[int, tuple[int, int]] = {6: (2, 3), 24: (4, 6), 96: (8, 12), 384: (16, 24), 1536: (32, 48)}
"""Wells → (rows, columns) of the standard microplate formats."""


def plate_format(wells: Iterable[str]) -> int | None:
    """The smallest standard format that holds every well (None beyond 1536-well positions)."""
    rows, cols = _extent(wells)
    for n, (n_rows, n_cols) in sorted(FORMATS.items()):
        if rows <= n_rows and cols <= n_cols:
            return n
    return None


def plate_grid(wells: Iterable[str], fmt: int | None = None) -> tuple[list[str], int]:
    """Row letters and the number of columns of the plate the wells sit on.

    ``fmt``: a standard format (6, 24, 96, 384, 1536) when known; else the smallest that holds
    the wells, or the wells' own extent when none does.
    """
    wells = list(wells)
    fmt = fmt if fmt in FORMATS else plate_format(wells)
    if fmt is not None:
        n_rows, n_cols = FORMATS[fmt]
        rows, cols = _extent(wells)
        n_rows, n_cols = max(n_rows, rows), max(n_cols, cols)  # a wrong hint never hides a well
    else:
        n_rows, n_cols = _extent(wells)
    return [row_letter(i) for i in range(1, n_rows + 1)], n_cols


def position(well: str) -> tuple[int, int]:
    """(row, column), both 1-based: 'B03' → (2, 3)."""
    letters, column = split_well(well)
    return row_number(letters), column


def _extent(wells: Iterable[str]) -> tuple[int, int]:
    rows = cols = 1
    for well in wells:
        r, c = position(well)
        rows, cols = max(rows, r), max(cols, c)
    return rows, cols
