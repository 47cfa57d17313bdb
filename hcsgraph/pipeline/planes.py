"""Planes of a plate and how steps group them.

A plane is identified by ``(well, site, channel, z, t)``; a step groups the planes that share its
fixed components (those not in ``variable_components``), each group in natural order of the
rest.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable
from operator import itemgetter
from typing import Any

from hcsgraph.pipeline.step import COMPONENTS, FunctionStep

PlaneId = tuple[str, int, int, int, int]
"""well, site, channel, z, t"""

_CINDEX = {c: i for i, c in enumerate(COMPONENTS)}


@functools.lru_cache(maxsize=4096)
def well_sort_key(well: str) -> tuple[int, str, int]:
    """Plate order: A01, A02, ..., B01, ..., AA01 (row letters, then column number)."""
    letters = "".join(ch for ch in well if ch.isalpha())
    digits = "".join(ch for ch in well if ch.isdigit())
    return (len(letters), letters, int(digits or 0))


def plane_table(table: Any) -> dict[PlaneId, str]:
    """Each plane of a plate index's table → its file."""
    planes: dict[PlaneId, str] = {}
    for well, site, channel, z, t, path in zip(
        table["well"], table["site"], table["channel"], table["z"], table["t"], table["path"], strict=True
    ):
        planes[(str(well), int(site), int(channel), int(z), int(t))] = str(path)
    return planes


def fixed_components(step: FunctionStep) -> tuple[str, ...]:
    """The components that define a step's groups (well first)."""
    return tuple(c for c in COMPONENTS if c not in step.variable_components)


def group_planes(planes: Iterable[PlaneId], fixed: tuple[str, ...]) -> dict[tuple[Any, ...], list[PlaneId]]:
    """Planes grouped by the fixed components, groups in plate order, each in natural order of the others."""
    idx = [_CINDEX[c] for c in fixed]
    group_of = itemgetter(*idx) if len(idx) > 1 else (lambda p, i=idx[0]: (p[i],))
    out: dict[tuple[Any, ...], list[PlaneId]] = defaultdict(list)
    for p in planes:
        out[group_of(p)].append(p)
    ordered = sorted(out, key=lambda g: (well_sort_key(g[0]), *g[1:]))
    return {g: sorted(out[g], key=lambda p: p[1:]) for g in ordered}


def group_label(fixed: tuple[str, ...], gkey: tuple[Any, ...]) -> str:
    """``B03_site1_channel2``: the group's well and fixed components, for files and messages."""
    return "_".join([str(gkey[0]), *(f"{c}{v}" for c, v in zip(fixed[1:], gkey[1:], strict=True))])


@functools.lru_cache(maxsize=1024)
def key_name(name: str) -> str:
    """A step or output name made safe for a task key prefix."""
    return "".join(ch if ch.isalnum() or ch in "_+|." else "_" for ch in name) or "step"
