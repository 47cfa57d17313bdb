"""OME-Zarr HCS plates (OME-NGFF 0.4 on Zarr v2, 0.5 on Zarr v3) as input.

Each plane becomes one row whose ``path`` is a plane reference into the field's full-resolution array,
``<plate>/<row>/<column>/<field>/<dataset>#t=0,c=1,z=0`` (0-based, the array's axes before Y and X);
:func:`hcsgraph.plate.reader.read_plane` reads it. Site = field index + 1, channel = c + 1, z = z + 1,
t = t + 1.

Every well, field and dataset path in the metadata must be a plain relative path that stays inside the
plate (no ``..``, no absolute path, no symlink out of it): anything else is refused with
:class:`PlateLayoutError` before any array is opened. The plate's image shape and dtype are the most
common over its fields' arrays; other fields are reported in ``PlateIndex.problems``.

Physical metadata come from the first field's ``multiscales``: the full-resolution dataset's ``scale``
(times the multiscale's own, if any) on the axes that carry a ``unit`` (lengths converted to µm, times
to seconds): x for the pixel size, z for the z spacing, t for the time interval. An axis without a unit
says nothing (hcsgraph writes scale 1 and no unit where the size is unknown). Channel names and
colours are the ``omero`` channels' ``label`` and ``color``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from hcsgraph.plate.index import (
    PlateIndex,
    PlateLayoutError,
    build_table,
    find_gaps,
    hex_colour,
    positive_or_none,
    well_name,
)
from hcsgraph.plate.problems import ODD_IMAGE, PlateProblem
from hcsgraph.plate.reader import plane_ref
from hcsgraph.plate.source import PlateSource, as_source

NAME = "omezarr"
_TO_UM = {"angstrom": 1e-4, "nanometer": 1e-3, "micrometer": 1.0, "micron": 1.0, "millimeter": 1e3,
          "centimeter": 1e4, "meter": 1e6}
_TO_S = {"nanosecond": 1e-9, "microsecond": 1e-6, "millisecond": 1e-3, "second": 1.0, "minute": 60.0,
         "hour": 3600.0, "day": 86400.0}


def _scale(transforms: Any, n: int) -> list[float] | None:
    """The product of the ``scale`` transforms in ``transforms`` (None without one, or a bad one)."""
    found = None
    for transform in transforms if isinstance(transforms, list) else []:
        if isinstance(transform, dict) and transform.get("type") == "scale":
            values = transform.get("scale")
            if not isinstance(values, list) or len(values) != n:
                return None
            try:
                found = [float(v) * (found[i] if found else 1.0) for i, v in enumerate(values)]
            except (TypeError, ValueError):
                return None
    return found


def physical_sizes(multiscale: dict[str, Any], dataset: dict[str, Any]) -> dict[str, float | None]:
    """``pixel_size_um``, ``z_spacing_um`` and ``time_interval_s`` from a multiscale's axes units and
    the scale of ``dataset``; None for an axis without a (known) unit."""
    found: dict[str, float | None] = {"pixel_size_um": None, "z_spacing_um": None, "time_interval_s": None}
    axes = multiscale.get("axes")
    if not isinstance(axes, list) or not all(isinstance(a, dict) for a in axes):
        return found  # 0.3 and earlier: axis names without units
    scale = _scale(dataset.get("coordinateTransformations"), len(axes))
    if scale is None:
        return found
    outer = _scale(multiscale.get("coordinateTransformations"), len(axes))
    if outer is not None:
        scale = [a * b for a, b in zip(scale, outer, strict=True)]
    for axis, value in zip(axes, scale, strict=True):
        name, unit = str(axis.get("name", "")).lower(), str(axis.get("unit") or "").lower()
        if name == "x" and unit in _TO_UM:
            found["pixel_size_um"] = positive_or_none(value, _TO_UM[unit])
        elif name == "z" and unit in _TO_UM:
            found["z_spacing_um"] = positive_or_none(value, _TO_UM[unit])
        elif name == "t" and unit in _TO_S:
            found["time_interval_s"] = positive_or_none(value, _TO_S[unit])
    return found


def _ome_from_documents(v3: bytes | None, v2: bytes | None) -> tuple[dict[str, Any], str] | None:
    """The OME attributes and NGFF version from a group's ``zarr.json`` (v3) or ``.zattrs`` (v2) bytes."""
    if v3 is not None:
        attrs = json.loads(v3).get("attributes", {})
        ome = attrs.get("ome")
        if isinstance(ome, dict):
            return ome, str(ome.get("version", "0.5"))
        return attrs, "0.4"
    if v2 is not None:
        return json.loads(v2), "0.4"
    return None


def _read_groups(source: PlateSource, groups: list[str]) -> dict[str, tuple[dict[str, Any], str] | None]:
    """The OME attributes and NGFF version (None: not a group) of many groups (paths relative to the plate): ``zarr.json`` of all at once,
    then ``.zattrs`` of those without one (URLs: concurrent requests, two rounds at most)."""
    found = _documents(source, groups, ".zattrs")
    return {g: _ome_from_documents(*found[g]) for g in groups}


def _documents(source: PlateSource, folders: list[str], v2_name: str) -> dict[str, tuple[bytes | None, bytes | None]]:
    """``{folder: (zarr.json bytes, v2_name bytes)}`` (None: absent); the v2 document is read only for the
    folders without a ``zarr.json`` (URLs: concurrent requests, two rounds at most)."""
    def key(folder: str, name: str) -> str:
        return f"{folder}/{name}" if folder else name

    v3 = source.read_optional(key(f, "zarr.json") for f in folders)
    rest = [f for f in folders if v3.get(key(f, "zarr.json")) is None]
    v2 = source.read_optional(key(f, v2_name) for f in rest) if rest else {}
    return {f: (v3.get(key(f, "zarr.json")), v2.get(key(f, v2_name))) for f in folders}


def _escapes(text: str) -> bool:
    parts = re.split(r"[\\/]", text)
    return bool(not text or "\0" in text or text.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", text)
                or ".." in parts)


def inside(root: Path, base: Path, rel: Any, what: str) -> Path:
    """``base / rel`` for a metadata path ``rel``; refused unless it is relative and stays inside ``root``."""
    text = rel if isinstance(rel, str) else ""
    escapes = _escapes(text)
    if not escapes:
        try:
            escapes = not (base / text).resolve().is_relative_to(root.resolve())
        except (OSError, RuntimeError):  # a symlink loop
            escapes = True
    if escapes:
        group = "the plate" if base == root else f"group {base.relative_to(root).as_posix()}"
        raise PlateLayoutError(f"{root}: the {what} path {rel!r} in the metadata of {group} is not a relative "
                               "path inside the plate (absolute, '..', or a link out of it); refusing to read it")
    return base / text


def _inside(source: PlateSource, base: str, rel: Any, what: str) -> str:
    """The plate-relative path of ``base/rel`` for a metadata path ``rel`` (see :func:`inside`)."""
    if not source.remote:
        root = Path(source.root)
        return (inside(root, root / base if base else root, rel, what)).relative_to(root).as_posix()
    text = rel if isinstance(rel, str) else ""
    if _escapes(text):
        group = "the plate" if not base else f"group {base}"
        raise PlateLayoutError(f"{source.root}: the {what} path {rel!r} in the metadata of {group} is not a relative "
                               "path inside the plate (absolute, '..', or a link out of it); refusing to read it")
    joined = "/".join(p for p in f"{base}/{text}".split("/") if p not in ("", "."))
    return joined


def looks_like(source: PlateSource | Path) -> bool:
    """True when the folder is a Zarr group with OME ``plate`` metadata."""
    source = as_source(source)
    try:
        found = _read_groups(source, [""])[""]
    except (OSError, ValueError) as exc:
        if source.remote and not isinstance(exc, ValueError):
            raise  # the store failed (a timeout, denied access): say so rather than try other layouts
        return False
    return found is not None and "plate" in found[0]


def parse(source: PlateSource | Path) -> PlateIndex:
    """Index an OME-Zarr HCS plate (its metadata documents only: one round of reads per level for URLs)."""
    source = as_source(source)
    found = _read_groups(source, [""])[""]
    if found is None or "plate" not in found[0]:
        raise PlateLayoutError(f"{source.root} is not an OME-Zarr plate (no 'plate' metadata in zarr.json or .zattrs)")
    plate_attrs = found[0]
    plate = plate_attrs["plate"]
    rows = [r["name"] for r in plate.get("rows", [])]
    columns = [c["name"] for c in plate.get("columns", [])]
    records, unrecognized = [], []
    channel_names: dict[int, str] = {}
    channel_colors: dict[int, str] = {}
    sizes_found: dict[str, float | None] | None = None
    expected_sites = set()
    arrays: list[tuple[str, tuple[int, int], np.dtype]] = []
    wells: list[tuple[str, str, str]] = []  # (well path in the metadata, plate-relative folder, well name)
    for well in plate.get("wells", []):
        well_path = well.get("path") if isinstance(well, dict) else None
        well_dir = _inside(source, "", well_path, "well")
        try:
            row_name, col_name = well_path.split("/")
            if "rowIndex" in well:
                row_name, col_name = rows[well["rowIndex"]], columns[well["columnIndex"]]
            name = well_name(row_name, int(col_name))
        except (ValueError, IndexError) as exc:
            raise PlateLayoutError(f"{source.root}: well path {well_path!r} is not '<row>/<column>'") from exc
        wells.append((well_path, well_dir, name))
    well_docs = _read_groups(source, [w for _, w, _ in wells])
    fields: list[tuple[str, str, int, str, str]] = []  # (well name, well path, site, image path, field folder)
    for well_path, well_dir, name in wells:
        well_found = well_docs[well_dir]
        if well_found is None or "well" not in well_found[0]:
            unrecognized.append(well_path)
            continue
        images = well_found[0]["well"].get("images", [])
        for site, image in enumerate(images, 1):
            expected_sites.add(site)
            image_path = image.get("path") if isinstance(image, dict) else None
            fields.append((name, well_path, site, image_path, _inside(source, well_dir, image_path, "field")))
    field_docs = _read_groups(source, [f[4] for f in fields])
    datasets: list[tuple[str, str, int, str, dict[str, Any], dict[str, Any], str]] = []
    for name, well_path, site, image_path, field_dir in fields:
        field_found = field_docs[field_dir]
        if field_found is None or "multiscales" not in field_found[0]:
            unrecognized.append(f"{well_path}/{image_path}")
            continue
        attrs = field_found[0]
        dataset = attrs["multiscales"][0]["datasets"][0]
        array_dir = _inside(source, field_dir, dataset.get("path"), "dataset")
        datasets.append((name, well_path, site, image_path, attrs, dataset, array_dir))
    metas = _array_metas(source, [d[6] for d in datasets])
    for name, well_path, site, image_path, attrs, dataset, array_dir in datasets:
        multiscale = attrs["multiscales"][0]
        axes = [a["name"] if isinstance(a, dict) else str(a) for a in multiscale.get("axes", "tczyx")]
        array_meta = metas[array_dir]
        shape = array_meta["shape"]
        arrays.append((f"{well_path}/{image_path}/{dataset['path']}", tuple(shape[-2:]),
                       np.dtype(array_meta["dtype"])))
        if not axes or len(axes) != len(shape):
            axes = list("tczyx"[-len(shape):])
        if sizes_found is None:
            sizes_found = physical_sizes(multiscale, dataset)
        if not channel_names and not channel_colors:
            for c, channel in enumerate((attrs.get("omero") or {}).get("channels", []), 1):
                if not isinstance(channel, dict):
                    continue
                if channel.get("label"):
                    channel_names[c] = str(channel["label"])
                if hex_colour(channel.get("color")) is not None:
                    channel_colors[c] = hex_colour(channel.get("color"))
        lead = axes[:-2]
        sizes = dict(zip(lead, shape[:-2], strict=True))
        array_ref = source.join(array_dir)
        for t in range(sizes.get("t", 1)):
            for c in range(sizes.get("c", 1)):
                for z in range(sizes.get("z", 1)):
                    index = {"t": t, "c": c, "z": z}
                    ref = plane_ref(array_ref, **{a: index.get(a, 0) for a in lead})
                    records.append((name, site, c + 1, z + 1, t + 1, ref))
    problems = []
    image_shape = dtype = None
    if arrays:
        (image_shape, dtype), _ = Counter((s, d) for _, s, d in arrays).most_common(1)[0]
        problems = [PlateProblem(ODD_IMAGE, path, f"{s[0]}x{s[1]} {d.name}, while the plate's images are "
                                                  f"{image_shape[0]}x{image_shape[1]} {dtype.name}")
                    for path, s, d in arrays if (s, d) != (image_shape, dtype)]
    table = build_table(records)
    gaps = find_gaps(table, sites=expected_sites or None) if not table.empty else None
    return PlateIndex(
        table,
        name=str(plate.get("name") or source.stem),
        root=source.root,
        source_format=NAME,
        channel_names=channel_names,
        channel_colors=channel_colors,
        **(sizes_found or {}),
        unrecognized=unrecognized,
        gaps=gaps,
        image_shape=image_shape,
        dtype=dtype,
        problems=problems,
        storage_options=source.storage_options,
    )


def _array_metas(source: PlateSource, array_dirs: list[str]) -> dict[str, dict[str, Any]]:
    """Shape and dtype text of Zarr arrays from their metadata (v3 ``zarr.json`` or v2 ``.zarray``)."""
    found = _documents(source, array_dirs, ".zarray")
    out = {}
    for a in array_dirs:
        v3, v2 = found[a]
        raw = v3 or v2
        if raw is None:
            raise PlateLayoutError(f"no Zarr array at {source.join(a)}")
        meta = json.loads(raw)
        out[a] = {"shape": list(meta["shape"]), "dtype": meta.get("data_type") or meta.get("dtype")}
    return out
