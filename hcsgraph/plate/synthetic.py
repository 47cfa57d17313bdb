"""Synthetic plates of nuclei-like objects with a known count in every image.

Each (well, site) holds a set of non-overlapping nuclei (soft-edged ellipses of varied size and
brightness); every channel, z-plane and time point of that site shows the same nuclei (fainter and
softer away from the middle plane, dimmer in later channels), on an offset background with a gentle
gradient, with Poisson noise. The number of nuclei differs from well to well. On the in-focus (middle)
plane, Gaussian smoothing + Otsu threshold + opening + labelling finds the true count within 10%. The ground truth
(one row per image: well, site, channel, z, t, path, count) is written beside the images as
``ground_truth.csv`` and ``ground_truth.json``. The same seed gives the same plate.

Two options make plates for object measurements (both off by default, and the plates above are
then unchanged): ``touching=0.3`` places about 30% of the nuclei in pairs of round nuclei that
overlap by ``PAIR_OVERLAP`` of their summed radii (a neck that a watershed splits and plain
labelling does not), and ``known_intensity=True`` renders every channel after the first as one flat
level per nucleus (drawn per nucleus and channel, 0.3-1.5 x the channel's peak; the two nuclei of a
pair within 15% of each other) over the nucleus and a ``CELL_MARGIN``-pixel ring around it, on the
same background. A pixel belongs to the nucleus whose rim is nearest, so the two
nuclei of a pair split their overlap. Either option writes ``ground_truth_objects.csv`` (also
``SyntheticPlate.objects``): one row per nucleus with well, site, nucleus, pair (-1: single), y, x,
radius_y, radius_x, angle, z (the in-focus plane), area (its own pixels) and ``<channel>_mean``, the
noise-free mean of each channel over the nucleus' own pixels on plane z at t=1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd
import tifffile

from hcsgraph.io.atomic import write_text_atomic
from hcsgraph.plate.index import PlateIndex, row_letter, row_number, split_well

LAYOUTS = ("imagexpress", "operaphenix", "cellvoyager")
PLATE_FORMATS = {96: (8, 12), 384: (16, 24), 1536: (32, 48)}
GROUND_TRUTH_CSV = "ground_truth.csv"
GROUND_TRUTH_JSON = "ground_truth.json"
GROUND_TRUTH_OBJECTS_CSV = "ground_truth_objects.csv"
CELL_MARGIN = 3.0
"""With ``known_intensity``, a nucleus' flat level reaches this many pixels beyond its rim."""
PAIR_OVERLAP = 0.1
"""The centres of a touching pair are ``(1 - PAIR_OVERLAP) * (r1 + r2)`` apart."""


@dataclass(frozen=True)
class SyntheticPlate:
    """A generated plate: its directory, layout and per-image ground truth."""

    path: Path
    layout: str
    ground_truth: pd.DataFrame
    channel_names: dict[int, str]
    pixel_size_um: float
    objects: pd.DataFrame | None = None
    """One row per nucleus (with ``touching`` or ``known_intensity``), else None."""

    @property
    def index(self) -> PlateIndex:
        """The plate opened with :func:`hcsgraph.plate.open_plate`."""
        from hcsgraph.plate import open_plate

        return open_plate(self.path)

    def counts(self) -> pd.DataFrame:
        """One row per (well, site): the true number of nuclei."""
        return self.ground_truth.groupby(["well", "site"], as_index=False)["count"].first()


@dataclass(frozen=True)
class _Nuclei:
    y: np.ndarray
    x: np.ndarray
    ry: np.ndarray
    rx: np.ndarray
    angle: np.ndarray
    brightness: np.ndarray
    pair: np.ndarray | None = None  # the pair number of each nucleus, -1 for a single one


def plate_wells(plate_format: int, n_wells: int | None = None, wells: Sequence[str] | None = None) -> list[str]:
    """The wells to generate: ``wells`` checked against the plate format, or the first ``n_wells``."""
    if plate_format not in PLATE_FORMATS:
        raise ValueError(f"plate_format={plate_format!r}: expected one of {sorted(PLATE_FORMATS)}")
    n_rows, n_cols = PLATE_FORMATS[plate_format]
    if n_wells is not None:
        if not 1 <= n_wells <= n_rows * n_cols:
            raise ValueError(f"n_wells={n_wells} must be 1..{n_rows * n_cols} for a {plate_format}-well plate")
        return [f"{row_letter(i // n_cols + 1)}{i % n_cols + 1:02d}" for i in range(n_wells)]
    out = []
    for well in wells or ():
        row, col = split_well(well)
        if row_number(row) > n_rows or col > n_cols:
            raise ValueError(f"well {well!r} is outside a {plate_format}-well plate")
        out.append(f"{row}{col:02d}")
    if not out:
        raise ValueError("give wells=[...] or n_wells=N")
    return out


def _place_nuclei(rng: np.random.Generator, shape: tuple[int, int], target: int, radius: float) -> _Nuclei:
    """Up to ``target`` ellipses whose bounding circles stay apart (rejection sampling)."""
    h, w = shape
    gap = max(3.0, 0.4 * radius)
    ys, xs, rs = [], [], []
    candidates = rng.uniform(size=(target * 30, 3))
    for cy, cx, cr in candidates:
        r = radius * (0.7 + 0.6 * cr)
        y = r + 1 + cy * (h - 2 * r - 2)
        x = r + 1 + cx * (w - 2 * r - 2)
        if ys:
            d = np.hypot(np.asarray(ys) - y, np.asarray(xs) - x)
            if np.any(d < np.asarray(rs) + r + gap):
                continue
        ys.append(y)
        xs.append(x)
        rs.append(r)
        if len(ys) == target:
            break
    n = len(ys)
    r = np.asarray(rs)
    aspect = rng.uniform(0.8, 1.0, n)
    return _Nuclei(np.asarray(ys), np.asarray(xs), r, r * aspect, rng.uniform(0, np.pi, n), rng.uniform(0.6, 1.4, n))


def _place_with_pairs(rng: np.random.Generator, shape: tuple[int, int], target: int, radius: float,
                      touching: float) -> _Nuclei:
    """Up to ``target`` nuclei, about ``touching`` of them in overlapping pairs; pairs and singles stay apart."""
    h, w = shape
    gap = max(3.0, 0.4 * radius)
    n_pairs = int(round(target * touching / 2))
    ys: list[float] = []
    xs: list[float] = []
    rys: list[float] = []
    rxs: list[float] = []
    pairs: list[int] = []
    units: list[tuple[float, float, float]] = []  # (y, x, reach) of every placed pair or single
    for kind in ["pair"] * n_pairs + ["single"] * (target - 2 * n_pairs):
        for _ in range(30):
            r1, r2 = radius * (0.7 + 0.6 * rng.uniform(size=2))
            d = (1.0 - PAIR_OVERLAP) * (r1 + r2)
            theta = rng.uniform(0, np.pi)
            reach = d / 2 + max(r1, r2) if kind == "pair" else r1
            room_y, room_x = h - 2 * reach - 2, w - 2 * reach - 2
            cy, cx = reach + 1 + rng.uniform() * room_y, reach + 1 + rng.uniform() * room_x
            if min(room_y, room_x) <= 0:
                continue
            if any(np.hypot(uy - cy, ux - cx) < ur + reach + gap for uy, ux, ur in units):
                continue
            units.append((cy, cx, reach))
            if kind == "single":
                members = [(cy, cx, r1, r1 * rng.uniform(0.8, 1.0), -1)]
            else:  # two round nuclei, their centres d apart on either side of the pair's centre
                number = 1 + max(pairs, default=-1)
                dy, dx = np.sin(theta) * d / 2, np.cos(theta) * d / 2
                members = [(cy - dy, cx - dx, r1, r1, number), (cy + dy, cx + dx, r2, r2, number)]
            for y, x, ry, rx, pair in members:
                ys.append(y)
                xs.append(x)
                rys.append(ry)
                rxs.append(rx)
                pairs.append(pair)
            break
    n = len(ys)
    return _Nuclei(np.asarray(ys), np.asarray(xs), np.asarray(rys), np.asarray(rxs), rng.uniform(0, np.pi, n),
                   rng.uniform(0.6, 1.4, n), np.asarray(pairs, dtype=np.int64))


def _rim_distance(shape: tuple[int, int], y: float, x: float, ry: float, rx: float, angle: float,
                  half: int) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The window ``(y0, y1, x0, x1)`` of ``half`` pixels around an ellipse's centre (clipped to the
    image) and the signed distance of its pixels to the ellipse's rim, in pixels (negative inside)."""
    h, w = shape
    y0, y1 = max(0, int(y) - half), min(h, int(y) + half + 1)
    x0, x1 = max(0, int(x) - half), min(w, int(x) + half + 1)
    dy = np.arange(y0, y1)[:, None] - y
    dx = np.arange(x0, x1)[None, :] - x
    cos, sin = np.cos(angle), np.sin(angle)
    u = (dy * cos + dx * sin) / ry
    v = (-dy * sin + dx * cos) / rx
    return (y0, y1, x0, x1), (np.sqrt(u * u + v * v) - 1.0) * min(ry, rx)


def _owners(nuclei: _Nuclei, shape: tuple[int, int], margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the nucleus (1-based) whose rim is nearest within ``margin`` pixels outside it (0:
    none) and the signed distance to that rim in pixels (negative inside)."""
    rim = np.full(shape, np.inf)
    owner = np.zeros(shape, dtype=np.int32)
    for i, (y, x, ry, rx, angle) in enumerate(zip(nuclei.y, nuclei.x, nuclei.ry, nuclei.rx, nuclei.angle,
                                                  strict=True), start=1):
        (y0, y1, x0, x1), dist = _rim_distance(shape, y, x, ry, rx, angle, int(np.ceil(max(ry, rx) + margin)) + 2)
        window = rim[y0:y1, x0:x1]
        closer = (dist < window) & (dist < margin)
        window[closer] = dist[closer]
        owner[y0:y1, x0:x1][closer] = i
    return owner, rim


def _background(shape: tuple[int, int], background: float, gradient: tuple[float, float]) -> np.ndarray:
    """The offset background with its gentle gradient (expected counts)."""
    h, w = shape
    yy = np.linspace(-0.5, 0.5, h)[:, None]
    xx = np.linspace(-0.5, 0.5, w)[None, :]
    return np.broadcast_to(background * (1.0 + gradient[0] * yy + gradient[1] * xx), shape).astype(np.float64)


def _intensity_levels(rng: np.random.Generator, nuclei: _Nuclei, channels: int) -> np.ndarray:
    """The flat level of every nucleus in every channel (x peak): 0.3-1.5, the second of a pair
    within 15% of the first (a split line a pixel off then moves a mean by well under 1%)."""
    levels = rng.uniform(0.3, 1.5, (len(nuclei.y), channels))
    if nuclei.pair is not None:
        for number in np.unique(nuclei.pair[nuclei.pair >= 0]):
            first, second = np.flatnonzero(nuclei.pair == number)[:2]
            levels[second] = levels[first] * rng.uniform(0.85, 1.15, channels)
    return levels


def _object_truth(well: str, site: int, nuclei: _Nuclei, owner: np.ndarray, rim: np.ndarray, z: int) -> list[dict]:
    """One row per nucleus: position, shape, pair and area (its own pixels inside its rim)."""
    inside = (owner > 0) & (rim < 0)
    areas = np.bincount(owner[inside], minlength=len(nuclei.y) + 1)[1:]
    pairs = nuclei.pair if nuclei.pair is not None else np.full(len(nuclei.y), -1)
    return [
        {"well": well, "site": site, "nucleus": i + 1, "pair": int(pairs[i]), "y": float(nuclei.y[i]),
         "x": float(nuclei.x[i]), "radius_y": float(nuclei.ry[i]), "radius_x": float(nuclei.rx[i]),
         "angle": float(nuclei.angle[i]), "z": z, "area": int(areas[i])}
        for i in range(len(nuclei.y))
    ]


def _add_means(rows: list[dict], expected: np.ndarray, owner: np.ndarray, rim: np.ndarray, name: str) -> None:
    """``<name>_mean`` of every row: the mean of ``expected`` over the nucleus' own pixels."""
    inside = (owner > 0) & (rim < 0)
    sums = np.bincount(owner[inside], weights=expected[inside], minlength=len(rows) + 1)[1:]
    counts = np.bincount(owner[inside], minlength=len(rows) + 1)[1:]
    for row, total, count in zip(rows, sums, counts, strict=True):
        row[f"{name}_mean"] = float(total / count) if count else float("nan")


def _render(
    nuclei: _Nuclei, shape: tuple[int, int], *, peak: float, background: float, edge: float,
    rng: np.random.Generator, gradient: tuple[float, float],
) -> np.ndarray:
    """Expected photon counts: background with a gentle gradient plus soft-edged nuclei, each in its own window."""
    image = _background(shape, background, gradient)
    for y, x, ry, rx, angle, bright in zip(nuclei.y, nuclei.x, nuclei.ry, nuclei.rx, nuclei.angle,
                                           nuclei.brightness, strict=True):
        (y0, y1, x0, x1), dist = _rim_distance(shape, y, x, ry, rx, angle, int(np.ceil(max(ry, rx) + 4 * edge)) + 1)
        texture = 1.0 + 0.08 * rng.standard_normal(dist.shape)
        image[y0:y1, x0:x1] += peak * bright * texture / (1.0 + np.exp(dist / edge))
    return image


def _to_dtype(expected: np.ndarray, dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise: exact draws below 30 expected counts, the normal approximation above (much faster)."""
    lam = np.clip(expected, 0, None)
    noisy = np.rint(lam + np.sqrt(lam) * rng.standard_normal(lam.shape, dtype=np.float32))
    low = lam < 30
    if low.any():
        noisy[low] = rng.poisson(lam[low])
    np.clip(noisy, 0, None, out=noisy)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(noisy, info.min, info.max).astype(dtype)
    return noisy.astype(dtype)


def _levels(dtype: np.dtype) -> tuple[float, float]:
    """(background, nucleus peak) in expected counts, sized to the dtype's range."""
    if np.issubdtype(dtype, np.integer) and np.iinfo(dtype).max <= 255:
        return 12.0, 120.0
    return 100.0, 900.0


def make_plate(
    path: str | os.PathLike,
    *,
    layout: str = "imagexpress",
    wells: Sequence[str] | None = None,
    n_wells: int | None = None,
    sites: int = 4,
    channels: int = 2,
    z: int = 1,
    t: int = 1,
    size: tuple[int, int] | int = (512, 512),
    dtype: str | np.dtype = "uint16",
    seed: int = 0,
    plate_format: int = 96,
    plate_name: str = "SynthPlate",
    pixel_size_um: float = 0.65,
    channel_names: Sequence[str] | None = None,
    touching: float = 0.0,
    known_intensity: bool = False,
) -> SyntheticPlate:
    """Write a synthetic plate to ``path`` (a new or empty directory) and return it with its ground truth.

    ``layout`` is ``"imagexpress"`` (``<name>.HTD``, ``TimePoint_<t>[/ZStep_<z>]/<name>_A01_s1_w1.tif``),
    ``"operaphenix"`` (``Images/Index.idx.xml``, ``Images/r01c01f01p01-ch1sk1fk1fl1.tiff``) or
    ``"cellvoyager"`` (``MeasurementData.mlf``, ``MeasurementDetail.mrf``,
    ``<name>_A01_T0001F001L01A01Z01C01.tif``). Wells default to ``("A01", "A02")``.
    ``touching`` (a fraction 0..1 of the nuclei) and ``known_intensity`` make touching pairs and
    per-nucleus intensities with a per-object ground truth (see the module documentation).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: expected one of {LAYOUTS}")
    if wells is None and n_wells is None:
        wells = ("A01", "A02")
    well_list = plate_wells(plate_format, n_wells, wells)
    for label, value in (("sites", sites), ("channels", channels), ("z", z), ("t", t)):
        if int(value) < 1:
            raise ValueError(f"{label}={value} must be >= 1")
    shape = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    if not 0.0 <= float(touching) <= 1.0:
        raise ValueError(f"touching={touching} must be a fraction 0..1 of the nuclei")
    with_objects = bool(touching) or bool(known_intensity)
    if min(shape) < 16:
        raise ValueError(f"size={size} is too small; use at least 16x16 pixels")
    dtype = np.dtype(dtype)
    names = list(channel_names) if channel_names else [("DAPI", "GFP", "RFP", "Cy5")[c] if c < 4 else f"ch{c + 1}"
                                                         for c in range(channels)]
    if len(names) != channels:
        raise ValueError(f"channel_names has {len(names)} names for {channels} channels")
    root = Path(path)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not empty; synthetic plates are written to a new directory")
    root.mkdir(parents=True, exist_ok=True)
    image_dir = root / "Images" if layout == "operaphenix" else root
    image_dir.mkdir(exist_ok=True)

    rng = np.random.default_rng(seed)
    radius = max(6.0, min(shape) / 40.0)
    capacity = max(3, int(0.12 * shape[0] * shape[1] / (np.pi * radius * radius)))
    background, peak = _levels(dtype)
    mid_z = (z - 1) / 2.0
    records = []
    object_rows: list[dict] = []
    focus = int(round(mid_z)) + 1  # the in-focus plane, 1-based
    for well in well_list:
        density = rng.uniform(0.35, 1.0)  # nuclei per well vary, as a treatment would make them
        for site in range(1, sites + 1):
            target = max(1, int(round(capacity * density * rng.uniform(0.85, 1.15))))
            if touching:
                nuclei = _place_with_pairs(rng, shape, target, radius, float(touching))
            else:
                nuclei = _place_nuclei(rng, shape, target, radius)
            gradient = tuple(rng.uniform(-0.25, 0.25, 2))
            if with_objects:
                owner, rim = _owners(nuclei, shape, CELL_MARGIN)
                levels = _intensity_levels(rng, nuclei, channels) if known_intensity else None
                site_truth = _object_truth(well, site, nuclei, owner, rim, focus)
            for tp in range(1, t + 1):
                for c in range(1, channels + 1):
                    for zp in range(1, z + 1):
                        defocus = abs(zp - 1 - mid_z)
                        level = peak * (1.0 - 0.15 * (c - 1)) / (1.0 + 0.15 * defocus)
                        if known_intensity and c > 1:
                            expected = _background(shape, background, gradient)
                            ring = owner > 0
                            expected[ring] += level * levels[owner[ring] - 1, c - 1]
                        else:
                            expected = _render(
                                nuclei, shape, peak=level,
                                background=background, edge=0.8 + 0.3 * defocus, rng=rng, gradient=gradient,
                            )
                        if with_objects and tp == 1 and zp == focus:
                            _add_means(site_truth, expected, owner, rim, names[c - 1])
                        image = _to_dtype(expected, dtype, rng)
                        file_path = _image_path(image_dir, layout, plate_name, well, site, c, zp, tp, z)
                        file_path.parent.mkdir(parents=True, exist_ok=True)
                        tifffile.imwrite(file_path, image)
                        records.append((well, site, c, zp, tp, str(file_path), len(nuclei.y)))
            if with_objects:
                object_rows.extend(site_truth)
    truth = pd.DataFrame(records, columns=["well", "site", "channel", "z", "t", "path", "count"])
    channel_map = {i: n for i, n in enumerate(names, 1)}
    if layout == "imagexpress":
        _write_htd(root / f"{plate_name}.HTD", plate_name, well_list, plate_format, sites, names, z, t)
    elif layout == "cellvoyager":
        _write_cellvoyager(root, truth, names, pixel_size_um, shape)
    else:
        _write_phenix_index(image_dir / "Index.idx.xml", plate_name, truth, plate_format, names, pixel_size_um, shape)
    write_text_atomic(root / GROUND_TRUTH_JSON, json.dumps({
        "plate": plate_name, "layout": layout, "seed": seed, "size": list(shape), "dtype": dtype.name,
        "channel_names": channel_map, "pixel_size_um": pixel_size_um, "images": truth.to_dict(orient="records"),
    }, indent=1), fsync=False)
    write_text_atomic(root / GROUND_TRUTH_CSV, truth.to_csv(index=False), fsync=False)
    objects = None
    if with_objects:
        objects = pd.DataFrame(object_rows)
        write_text_atomic(root / GROUND_TRUTH_OBJECTS_CSV, objects.to_csv(index=False), fsync=False)
    return SyntheticPlate(root, layout, truth, channel_map, pixel_size_um, objects)


def _image_path(image_dir: Path, layout: str, plate: str, well: str, site: int, channel: int, zp: int, tp: int,
                n_z: int) -> Path:
    if layout == "imagexpress":
        folder = image_dir / f"TimePoint_{tp}"
        if n_z > 1:
            folder = folder / f"ZStep_{zp}"
        return folder / f"{plate}_{well}_s{site}_w{channel}.tif"
    if layout == "cellvoyager":
        return image_dir / f"{plate}_{well}_T{tp:04d}F{site:03d}L01A01Z{zp:02d}C{channel:02d}.tif"
    row, col = split_well(well)
    return image_dir / f"r{row_number(row):02d}c{col:02d}f{site:02d}p{zp:02d}-ch{channel}sk{tp}fk1fl1.tiff"


def _write_htd(path: Path, plate: str, wells: list[str], plate_format: int, sites: int, names: list[str],
               n_z: int, n_t: int) -> None:
    n_rows, n_cols = PLATE_FORMATS[plate_format]
    chosen = {split_well(w) for w in wells}
    x_sites = int(np.ceil(np.sqrt(sites)))
    y_sites = int(np.ceil(sites / x_sites))
    lines = ['"HTSInfoFile", Version 1.0', f'"Description", "{plate}"', f'"TimePoints", {n_t}',
             f'"ZSeries", {"TRUE" if n_z > 1 else "FALSE"}', f'"ZSteps", {n_z}',
             f'"XWells", {n_cols}', f'"YWells", {n_rows}']
    for r in range(1, n_rows + 1):
        flags = ", ".join("TRUE" if (row_letter(r), c) in chosen else "FALSE" for c in range(1, n_cols + 1))
        lines.append(f'"WellsSelection{r}", {flags}')
    lines += [f'"Sites", {"TRUE" if sites > 1 else "FALSE"}', f'"XSites", {x_sites}', f'"YSites", {y_sites}']
    for r in range(y_sites):
        flags = ", ".join("TRUE" if r * x_sites + c < sites else "FALSE" for c in range(x_sites))
        lines.append(f'"SiteSelection{r + 1}", {flags}')
    lines += ['"Waves", TRUE', f'"NWavelengths", {len(names)}']
    for i, name in enumerate(names, 1):
        lines += [f'"WaveName{i}", "{name}"', f'"WaveCollect{i}", 1']
    lines += [f'"UniquePlateIdentifier", "{plate}"', '"EndFile"']
    write_text_atomic(path, "\r\n".join(lines) + "\r\n", fsync=False)


def _write_phenix_index(path: Path, plate: str, truth: pd.DataFrame, plate_format: int, names: list[str],
                        pixel_size_um: float, shape: tuple[int, int]) -> None:
    n_rows, n_cols = PLATE_FORMATS[plate_format]
    resolution = f"{pixel_size_um * 1e-6:.6E}"
    wells = sorted({split_well(w) for w in truth["well"]}, key=lambda rc: (row_number(rc[0]), rc[1]))
    parts = ['<?xml version="1.0" encoding="utf-8"?>',
             '<EvaluationInputData xmlns="http://www.perkinelmer.com/PEHH/HarmonyV6" Version="2">',
             f"<Plates><Plate><PlateID>{escape(plate)}</PlateID><Name>{escape(plate)}</Name>"
             f"<PlateRows>{n_rows}</PlateRows><PlateColumns>{n_cols}</PlateColumns></Plate></Plates>",
             "<Wells>"]
    parts += [f"<Well><id>{row_number(r):02d}{c:02d}</id><Row>{row_number(r)}</Row><Col>{c}</Col></Well>"
              for r, c in wells]
    parts.append("</Wells><Maps><Map>")
    parts += [f'<Entry ChannelID="{i}"><ChannelID>{i}</ChannelID><ChannelName>{escape(n)}</ChannelName>'
              f'<ImageResolutionX Unit="m">{resolution}</ImageResolutionX>'
              f'<ImageResolutionY Unit="m">{resolution}</ImageResolutionY>'
              f"<ImageSizeX>{shape[1]}</ImageSizeX><ImageSizeY>{shape[0]}</ImageSizeY></Entry>"
              for i, n in enumerate(names, 1)]
    parts.append("</Map></Maps><Images>")
    for rec in truth.itertuples(index=False):
        r, c = split_well(rec.well)
        parts.append(
            f'<Image Version="1"><id>{row_number(r):02d}{c:02d}K{rec.t}F{rec.site}P{rec.z}R{rec.channel}</id>'
            f"<URL>{Path(rec.path).name}</URL><Row>{row_number(r)}</Row><Col>{c}</Col>"
            f"<FieldID>{rec.site}</FieldID><PlaneID>{rec.z}</PlaneID><TimepointID>{rec.t - 1}</TimepointID>"
            f"<ChannelID>{rec.channel}</ChannelID><ChannelName>{escape(names[rec.channel - 1])}</ChannelName>"
            f'<ImageResolutionX Unit="m">{resolution}</ImageResolutionX></Image>'
        )
    parts.append("</Images></EvaluationInputData>")
    write_text_atomic(path, "\n".join(parts) + "\n", fsync=False)


_BTS = "http://www.yokogawa.co.jp/BTS/BTSSchema/1.0"


def _write_cellvoyager(root: Path, truth: pd.DataFrame, names: list[str], pixel_size_um: float,
                       shape: tuple[int, int]) -> None:
    """``MeasurementData.mlf`` (one IMG record per file) and ``MeasurementDetail.mrf`` (one entry per channel)."""
    records = []
    for rec in truth.itertuples(index=False):
        r, c = split_well(rec.well)
        records.append(
            f'<bts:MeasurementRecord bts:Time="2024-01-01T00:00:00.000+00:00" bts:Column="{c}" '
            f'bts:Row="{row_number(r)}" bts:FieldIndex="{rec.site}" bts:TimePoint="{rec.t}" bts:TimelineIndex="1" '
            f'bts:X="0.0" bts:Y="0.0" bts:Value="0" bts:Type="IMG" bts:ZIndex="{rec.z}" bts:Z="{2.0 * rec.z:.1f}" '
            f'bts:ActionIndex="1" bts:Action="3D" bts:Ch="{rec.channel}">{escape(Path(rec.path).name)}'
            "</bts:MeasurementRecord>")
    write_text_atomic(root / "MeasurementData.mlf", '<?xml version="1.0" encoding="utf-8"?>\r\n'
                      f'<bts:MeasurementData xmlns:bts="{_BTS}" bts:Version="1.0">\r\n  '
                      + "\r\n  ".join(records) + "\r\n</bts:MeasurementData>\r\n", fsync=False)
    channels = [
        f'<bts:MeasurementChannel bts:Ch="{i}" bts:HorizontalPixelDimension="{pixel_size_um}" '
        f'bts:VerticalPixelDimension="{pixel_size_um}" bts:CameraNumber="1" bts:InputBitDepth="16" '
        f'bts:InputLevel="65535" bts:HorizontalPixels="{shape[1]}" bts:VerticalPixels="{shape[0]}" '
        f'bts:FilterWheelPosition="{i}" bts:Target="{escape(name, {chr(34): "&quot;"})}" bts:ShadingCorrectionSource="" />'
        for i, name in enumerate(names, 1)
    ]
    write_text_atomic(root / "MeasurementDetail.mrf", '<?xml version="1.0" encoding="utf-8"?>\r\n'
                      f'<bts:MeasurementDetail xmlns:bts="{_BTS}" bts:Version="1.0" bts:OperatorName="hcsgraph" '
                      f'bts:Title="synthetic" bts:Application="hcsgraph" bts:TimePoints="{truth["t"].max()}" '
                      f'bts:FieldCount="{truth["site"].max()}" bts:ZCount="{truth["z"].max()}" '
                      f'bts:TargetSystem="CV8000">\r\n  ' + "\r\n  ".join(channels)
                      + "\r\n</bts:MeasurementDetail>\r\n", fsync=False)
