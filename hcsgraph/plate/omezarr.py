"""OME-Zarr HCS plates (OME-NGFF 0.4 on Zarr v2, 0.5 on Zarr v3) as input.

Each plane becomes one row whose ``path`` is a plane reference into the field's full-resolution array,
``<plate>/<row>/<column>/<field>/<dataset>#t=0,c=1,z=0`` (0-based, the array's axes before Y and X);
:func:`hcsgraph.plate.reader.read_plane` reads it. Site = field index + 1, channel = c + 1, z = z + 1,
t = t + 1.

Every well, field and dataset path in the metadata must be a plain relative path that stays inside the
plate (no ``..``, no absolute path, no symlink out of it): anything else is refused with
:class:`PlateLayoutError` before any array is opened. The plate's image shape and dtype are the most
common over its fields' arrays; other fields are reported in ``PlateIndex.problems``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from hcsgraph.plate.index import PlateIndex, PlateLayoutError, build_table, find_gaps, well_name
from hcsgraph.plate.problems import ODD_IMAGE, PlateProblem
from hcsgraph.plate.reader import plane_ref

NAME = "omezarr"


def read_ome_attrs(group_dir: Path) -> tuple[dict[str, Any], str] | None:
    """The OME attributes of a Zarr group directory and their NGFF version, or None if not a group."""
    v3 = group_dir / "zarr.json"
    if v3.is_file():
        attrs = json.loads(v3.read_text()).get("attributes", {})
        ome = attrs.get("ome")
        if isinstance(ome, dict):
            return ome, str(ome.get("version", "0.5"))
        return attrs, "0.4"
    v2 = group_dir / ".zattrs"
    if v2.is_file():
        attrs = json.loads(v2.read_text())
        return attrs, "0.4"
    return None


def inside(root: Path, base: Path, rel: Any, what: str) -> Path:
    """``base / rel`` for a metadata path ``rel``; refused unless it is relative and stays inside ``root``."""
    text = rel if isinstance(rel, str) else ""
    parts = re.split(r"[\\/]", text)
    escapes = (not text or "\0" in text or text.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", text)
               or ".." in parts)
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


def looks_like(root: Path) -> bool:
    """True when ``root`` is a Zarr group with OME ``plate`` metadata."""
    try:
        found = read_ome_attrs(root)
    except (OSError, ValueError):
        return False
    return found is not None and "plate" in found[0]


def parse(root: Path) -> PlateIndex:
    """Index an OME-Zarr HCS plate."""
    root = Path(root)
    found = read_ome_attrs(root)
    if found is None or "plate" not in found[0]:
        raise PlateLayoutError(f"{root} is not an OME-Zarr plate (no 'plate' metadata in zarr.json or .zattrs)")
    plate_attrs = found[0]
    plate = plate_attrs["plate"]
    rows = [r["name"] for r in plate.get("rows", [])]
    columns = [c["name"] for c in plate.get("columns", [])]
    records, unrecognized = [], []
    channel_names: dict[int, str] = {}
    pixel_size = None
    expected_sites = set()
    arrays: list[tuple[str, tuple[int, int], np.dtype]] = []
    for well in plate.get("wells", []):
        well_path = well.get("path") if isinstance(well, dict) else None
        well_dir = inside(root, root, well_path, "well")
        try:
            row_name, col_name = well_path.split("/")
            if "rowIndex" in well:
                row_name, col_name = rows[well["rowIndex"]], columns[well["columnIndex"]]
            name = well_name(row_name, int(col_name))
        except (ValueError, IndexError) as exc:
            raise PlateLayoutError(f"{root}: well path {well_path!r} is not '<row>/<column>'") from exc
        well_found = read_ome_attrs(well_dir)
        if well_found is None or "well" not in well_found[0]:
            unrecognized.append(well_path)
            continue
        images = well_found[0]["well"].get("images", [])
        for site, image in enumerate(images, 1):
            expected_sites.add(site)
            image_path = image.get("path") if isinstance(image, dict) else None
            field_dir = inside(root, well_dir, image_path, "field")
            field_found = read_ome_attrs(field_dir)
            if field_found is None or "multiscales" not in field_found[0]:
                unrecognized.append(f"{well_path}/{image_path}")
                continue
            attrs = field_found[0]
            multiscale = attrs["multiscales"][0]
            axes = [a["name"] if isinstance(a, dict) else str(a) for a in multiscale.get("axes", "tczyx")]
            dataset = multiscale["datasets"][0]
            array_dir = inside(root, field_dir, dataset.get("path"), "dataset")
            array_meta = _array_meta(array_dir)
            shape = array_meta["shape"]
            arrays.append((f"{well_path}/{image_path}/{dataset['path']}", tuple(shape[-2:]),
                           np.dtype(array_meta["dtype"])))
            if not axes or len(axes) != len(shape):
                axes = list("tczyx"[-len(shape):])
            if pixel_size is None:
                for transform in dataset.get("coordinateTransformations", []):
                    if transform.get("type") == "scale":
                        pixel_size = float(transform["scale"][-1])
            if not channel_names:
                for c, channel in enumerate((attrs.get("omero") or {}).get("channels", []), 1):
                    if channel.get("label"):
                        channel_names[c] = str(channel["label"])
            lead = axes[:-2]
            sizes = dict(zip(lead, shape[:-2], strict=True))
            for t in range(sizes.get("t", 1)):
                for c in range(sizes.get("c", 1)):
                    for z in range(sizes.get("z", 1)):
                        index = {"t": t, "c": c, "z": z}
                        ref = plane_ref(str(array_dir), **{a: index.get(a, 0) for a in lead})
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
        name=str(plate.get("name") or root.stem),
        root=str(root),
        source_format=NAME,
        channel_names=channel_names,
        pixel_size_um=pixel_size,
        unrecognized=unrecognized,
        gaps=gaps,
        image_shape=image_shape,
        dtype=dtype,
        problems=problems,
    )


def _array_meta(array_dir: Path) -> dict[str, Any]:
    """Shape and dtype text of a Zarr array from its metadata file (v3 ``zarr.json`` or v2 ``.zarray``)."""
    for name in ("zarr.json", ".zarray"):
        path = array_dir / name
        if path.is_file():
            meta = json.loads(path.read_text())
            return {"shape": list(meta["shape"]), "dtype": meta.get("data_type") or meta.get("dtype")}
    raise PlateLayoutError(f"no Zarr array at {array_dir}")
