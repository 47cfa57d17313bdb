"""Helpers for the plate tests: tiny real TIFF files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile


def write_tiff(path: Path, value: int = 0, shape: tuple[int, int] = (8, 8), dtype: str = "uint16") -> Path:
    """An 8×8 TIFF whose pixels are ``value`` plus a ramp, so that each file's pixels differ."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (np.arange(shape[0] * shape[1]).reshape(shape) + value).astype(dtype)
    tifffile.imwrite(path, data)
    return path


@pytest.fixture()
def tiff():
    return write_tiff


def htd_text(*, waves: list[str], x_wells: int = 12, y_wells: int = 8, wells: set[tuple[int, int]] = frozenset(),
             sites: int = 1, z_steps: int = 1, timepoints: int = 1) -> str:
    """An ImageXpress .HTD file body."""
    lines = ['"HTSInfoFile", Version 1.0', '"Description", "Test plate"', f'"TimePoints", {timepoints}',
             f'"ZSeries", {"TRUE" if z_steps > 1 else "FALSE"}', f'"ZSteps", {z_steps}',
             f'"XWells", {x_wells}', f'"YWells", {y_wells}']
    for r in range(1, y_wells + 1):
        lines.append(f'"WellsSelection{r}", ' + ", ".join(
            "TRUE" if (r, c) in wells else "FALSE" for c in range(1, x_wells + 1)))
    lines += [f'"Sites", {"TRUE" if sites > 1 else "FALSE"}', f'"XSites", {sites}', '"YSites", 1',
              '"SiteSelection1", ' + ", ".join(["TRUE"] * sites),
              '"Waves", TRUE', f'"NWavelengths", {len(waves)}']
    for i, name in enumerate(waves, 1):
        lines += [f'"WaveName{i}", "{name}"', f'"WaveCollect{i}", 1']
    lines.append('"EndFile"')
    return "\r\n".join(lines) + "\r\n"


@pytest.fixture()
def htd():
    return htd_text
