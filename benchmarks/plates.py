"""Benchmark plates: generated once with a fixed seed, cached in the work directory, and subset by wells."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from hcsgraph.plate import PlateIndex, open_plate
from hcsgraph.plate.synthetic import GROUND_TRUTH_JSON, make_plate

SEED = 7


def cached_plate(workdir: Path, n_wells: int, sites: int, channels: int, size: int, seed: int = SEED) -> PlateIndex:
    """The synthetic plate with these parameters under ``workdir``, generated on first use."""
    path = Path(workdir) / f"plate_w{n_wells}_s{sites}_c{channels}_{size}px_seed{seed}"
    truth = path / GROUND_TRUTH_JSON
    if truth.is_file():
        meta = json.loads(truth.read_text())
        if meta.get("seed") == seed and meta.get("size") == [size, size]:
            return open_plate(path)
    if path.exists():
        shutil.rmtree(path)  # a half-written plate from an interrupted run
    make_plate(path, n_wells=n_wells, sites=sites, channels=channels, size=(size, size), dtype="uint16", seed=seed)
    return open_plate(path)


def subset(index: PlateIndex, n_wells: int, repeat: int = 1) -> PlateIndex:
    """The first ``n_wells`` wells of ``index``; ``repeat > 1`` lists them again under new well names.

    Repeating reads the same files several times under 384-well names (A01..P24): a plate larger
    than the disk space its pixels take, which is what the memory workload needs.
    """
    wells = index.wells[:n_wells]
    table = index.table[index.table["well"].isin(wells)]
    parts = []
    for r in range(repeat):
        part = table.copy()
        if repeat > 1:
            mapping = {w: _well_of(i + r * len(wells)) for i, w in enumerate(wells)}
            part["well"] = part["well"].map(mapping)
            part["row"] = part["well"].str[0]
            part["column"] = part["well"].str[1:].astype(np.int64)
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    return PlateIndex(table, name=f"{index.name}-{n_wells * repeat}w", root=index.root,
                      source_format=index.source_format, channel_names=index.channel_names,
                      pixel_size_um=index.pixel_size_um, image_shape=index.image_shape, dtype=index.dtype)


def _well_of(i: int) -> str:
    """Wells of a 384-well plate in row order: 0 → A01, 24 → B01."""
    return f"{chr(ord('A') + i // 24)}{i % 24 + 1:02d}"


def plate_bytes(index: PlateIndex) -> int:
    """Pixel bytes of every plane of the plate."""
    h, w = index.image_shape
    return len(index) * h * w * np.dtype(index.dtype).itemsize
