"""A static plate heat map of a finished run (matplotlib), for reports: ``result.plot_plate("cell_count")``.

Each well of the plate's physical grid is a circle coloured by one per-well value (a numeric
column of a special output, summed or averaged over the well's rows), with a colour bar; failed
wells are outlined red and crossed, wells without a value are grey, empty positions white.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from hcsgraph.dashboard.events import IDENTIFIERS
from hcsgraph.dashboard.geometry import plate_grid, position

AGGREGATES = ("sum", "mean", "median", "min", "max")


def well_values(result: Any, value: str, aggregate: str = "sum") -> pd.Series:
    """One number per well: ``value`` (a column, or ``"table.column"``) of the run's special outputs."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate={aggregate!r}: expected one of {', '.join(AGGREGATES)}")
    table, column = _find_column(result.special_outputs, value)
    numbers = pd.to_numeric(table[column], errors="coerce")
    frame = pd.DataFrame({"well": table["well"].astype(str), "value": numbers}).dropna()
    return frame.groupby("well", sort=False)["value"].agg(aggregate)


def plot_plate(result: Any, value: str = "cell_count", *, aggregate: str = "sum",
               path: str | os.PathLike[str] | None = None, plate_format: int | None = None,
               title: str | None = None, cmap: str = "viridis") -> Any:
    """The plate heat map of ``value`` per well; a matplotlib ``Figure`` (saved as a PNG at ``path``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PatchCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    values = well_values(result, value, aggregate)
    status = _statuses(result)
    letters, n_cols = plate_grid([*status, *values.index], plate_format)
    width = min(16.0, 1.6 + 0.42 * n_cols)
    fig = Figure(figsize=(width, 0.9 + (width - 1.6) * len(letters) / n_cols))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    filled, empty, failed = [], [], []
    numbers = []
    for r in range(1, len(letters) + 1):
        for c in range(1, n_cols + 1):
            well = f"{letters[r - 1]}{c:02d}"
            circle = Circle((c, r), 0.42)
            if well in values.index:
                filled.append(circle)
                numbers.append(float(values[well]))
            else:
                empty.append((circle, well in status))
            if status.get(well) == "failed":
                failed.append((c, r))
    for (circle, is_well) in empty:
        circle.set_facecolor("#e6e6e6" if is_well else "white")
        circle.set_edgecolor("#999999" if is_well else "#cccccc")
        ax.add_patch(circle)
    label = f"{_label(value)} ({aggregate})"
    if filled:
        cells = PatchCollection(filled, cmap=cmap, edgecolor="#555555", linewidth=0.6)
        cells.set_array(np.asarray(numbers))
        ax.add_collection(cells)
        fig.colorbar(cells, ax=ax, label=label, fraction=0.04, pad=0.02)
    for c, r in failed:
        ax.add_patch(Circle((c, r), 0.42, facecolor="none", edgecolor="#d7301f", linewidth=1.8))
        ax.plot([c - 0.25, c + 0.25], [r - 0.25, r + 0.25], color="#d7301f", linewidth=1.2)
        ax.plot([c - 0.25, c + 0.25], [r + 0.25, r - 0.25], color="#d7301f", linewidth=1.2)
    _axes(ax, letters, n_cols)
    ax.set_title(title or f"{label} per well", fontsize=11)
    if path is not None:
        fig.savefig(os.fspath(path), dpi=150, bbox_inches="tight")
    return fig


def _axes(ax: Any, letters: list[str], n_cols: int) -> None:
    size = 9 if n_cols <= 24 else 6
    ax.set_xlim(0.4, n_cols + 0.6)
    ax.set_ylim(len(letters) + 0.6, 0.4)
    ax.set_aspect("equal")
    ax.xaxis.tick_top()
    ax.set_xticks(range(1, n_cols + 1), [str(c) for c in range(1, n_cols + 1)], fontsize=size)
    ax.set_yticks(range(1, len(letters) + 1), letters, fontsize=size)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_color("#aaaaaa")


def _statuses(result: Any) -> dict[str, str]:
    wells = getattr(result, "wells", None)
    if wells is None or not len(wells):
        return {}
    return {str(w): str(s) for w, s in zip(wells["well"], wells["status"], strict=True)}


def _find_column(tables: dict[str, pd.DataFrame], value: str) -> tuple[pd.DataFrame, str]:
    if "." in value and value.split(".", 1)[0] in tables:
        name, column = value.split(".", 1)
        candidates = [(tables[name], column)] if column in tables[name].columns else []
    else:
        candidates = [(t, value) for t in tables.values() if value in t.columns and "well" in t.columns]
    if not candidates:
        known = sorted(f"{n}.{c}" for n, t in tables.items() for c in t.columns
                       if c not in IDENTIFIERS and pd.api.types.is_numeric_dtype(t[c]))
        raise ValueError(f"no special output has a column {value!r}; numeric columns: {', '.join(known) or 'none'}")
    return candidates[0]


def _label(value: str) -> str:
    return value.split(".", 1)[1] if "." in value else value


__all__ = ["AGGREGATES", "plot_plate", "position", "well_values"]
