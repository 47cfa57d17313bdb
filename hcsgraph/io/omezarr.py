"""Write OME-Zarr HCS plates: OME-NGFF 0.5 on Zarr v3 (default) or 0.4 on Zarr v2.

Two phases, so that parallel writers never collide:

1. :func:`create_plate` (once, on the client) writes every group's metadata (plate → row → well →
   field, with ``plate``, ``well``, ``multiscales`` and ``omero``) and every empty array's metadata. The
   hierarchy is built in a temporary directory beside ``path`` and renamed into place, so a plate is
   either fully described or absent.
2. :func:`write_plane` (on workers) fills one YX plane of one field and its pyramid levels. Indices
   ``field``, ``t``, ``c`` and ``z`` are **0-based** here (the plate index is 1-based: ``field = site - 1``).

Arrays are TCZYX (``dimension_names`` on Zarr v3). Chunking follows ``ZarrConfig.chunk_strategy``:

* ADAPTIVE: one chunk per YX plane while the plane is at most ``max_chunk_bytes``; larger planes are
  cut into square tiles, and once a plane has ``shard_min_chunks`` tiles or more (Zarr v3) the tiles of a
  plane are grouped into one shard. Either way each plane is its own chunk or shard, so writers of
  different planes never touch the same file: one :func:`write_plane` task per plane is safe.
* FIELD: one chunk per z-stack (all Z of one t, c); write it with :func:`write_stack`, one writer per stack.
* WELL: one chunk per field array (all of T, C, Z); write it with :func:`write_field`, one writer per field.

The cost of creating and writing grows linearly with the number of wells: nothing rescans the hierarchy.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.core.group import GroupMetadata

from hcsgraph.config import ZarrChunkStrategy, ZarrCompressor, ZarrConfig
from hcsgraph.plate.index import row_number, split_well

AXES = ("t", "c", "z", "y", "x")
_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
_COLOURS = {  # channel-name hints → display colour
    "dapi": "0000FF", "hoechst": "0000FF", "405": "0000FF", "blue": "0000FF",
    "gfp": "00FF00", "fitc": "00FF00", "488": "00FF00", "green": "00FF00",
    "rfp": "FF0000", "tritc": "FF0000", "cy3": "FF0000", "mcherry": "FF0000", "568": "FF0000", "red": "FF0000",
    "cy5": "FF00FF", "647": "FF00FF", "far": "FF00FF",
}
_PALETTE = ("0000FF", "00FF00", "FF0000", "FF00FF", "00FFFF", "FFFF00", "FFFFFF")
COMPLETE_KEY = "hcsgraph"


def well_path(well: str) -> str:
    """The group path of a well: 'A01' → 'A/1'."""
    row, column = split_well(well)
    return f"{row}/{column}"


@dataclass(frozen=True)
class PlateLayout:
    """What :func:`create_plate` wrote: enough for workers to write pixels without reading metadata."""

    path: str
    plate_name: str
    wells: tuple[str, ...]
    fields: int
    shape_tczyx: tuple[int, int, int, int, int]
    dtype: str
    channel_names: tuple[str, ...]
    n_levels: int
    ome_zarr_version: str
    chunk_strategy: str
    chunks: tuple[tuple[int, ...], ...] = field(default=())
    """Chunk shape of each pyramid level."""
    shards: tuple[tuple[int, ...] | None, ...] = field(default=())
    """Shard shape of each pyramid level (None: not sharded)."""

    def array_path(self, well: str, field: int, level: int = 0) -> str:
        """The array's path inside the plate, e.g. 'A/1/0/0' (field and level 0-based)."""
        return f"{well_path(well)}/{field}/{level}"

    def plane_ref(self, well: str, field: int, t: int, c: int, z: int) -> str:
        """A reference that :func:`hcsgraph.plate.reader.read_plane` reads (all indices 0-based)."""
        return f"{self.path}/{self.array_path(well, field)}#t={t},c={c},z={z}"

    def level_shape(self, level: int) -> tuple[int, ...]:
        """TCZYX shape of a pyramid level."""
        return level_shape(self.shape_tczyx, level)


def level_shape(shape_tczyx: tuple[int, ...], level: int) -> tuple[int, ...]:
    """TCZYX shape of pyramid level ``level``: YX halved (rounded up) per level."""
    t, c, z, y, x = shape_tczyx
    return (t, c, z, -(-y // 2**level), -(-x // 2**level))


def plan_chunks(shape_tczyx: tuple[int, ...], dtype: np.dtype, config: ZarrConfig) -> tuple[tuple, tuple | None]:
    """(chunks, shards or None) for one array, following ``config.chunk_strategy`` (see module docs)."""
    t, c, z, y, x = shape_tczyx
    itemsize = np.dtype(dtype).itemsize
    if config.chunk_strategy is ZarrChunkStrategy.WELL:
        return (t, c, z, y, x), None
    if config.chunk_strategy is ZarrChunkStrategy.FIELD:
        return (1, 1, z, y, x), None
    if y * x * itemsize <= config.max_chunk_bytes:
        return (1, 1, 1, y, x), None
    side = 16
    while (2 * side) ** 2 * itemsize <= config.max_chunk_bytes:
        side *= 2
    ty, tx = min(y, side), min(x, side)
    n_y, n_x = -(-y // ty), -(-x // tx)
    chunks = (1, 1, 1, ty, tx)
    if config.zarr_format == 3 and n_y * n_x >= config.shard_min_chunks:
        return chunks, (1, 1, 1, n_y * ty, n_x * tx)
    return chunks, None


def _compressors(config: ZarrConfig) -> Any:
    level = config.compression_level
    if config.compressor is ZarrCompressor.NONE:
        return None
    if config.zarr_format == 3:
        from zarr.codecs import BloscCodec, ZstdCodec

        if config.compressor is ZarrCompressor.LZ4:
            return BloscCodec(cname="lz4", clevel=level, shuffle="shuffle")
        return ZstdCodec(level=level)
    import numcodecs

    if config.compressor is ZarrCompressor.LZ4:
        return numcodecs.Blosc(cname="lz4", clevel=level, shuffle=numcodecs.Blosc.SHUFFLE)
    return numcodecs.Zstd(level=level)


def channel_colour(name: str, index: int) -> str:
    """A display colour (RRGGBB) for a channel: from its name when it hints at a dye, else a palette."""
    lower = name.lower()
    for hint, colour in _COLOURS.items():
        if hint in lower:
            return colour
    return _PALETTE[index % len(_PALETTE)]


def omero_metadata(channel_names: list[str], dtype: np.dtype, name: str) -> dict[str, Any]:
    """``omero`` rendering metadata: one channel per name, colour and a window spanning the dtype's range."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        low, high = float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)
    elif dtype == np.bool_:
        low, high = 0.0, 1.0
    else:
        low, high = 0.0, 1.0
    channels = [
        {"label": label, "color": channel_colour(label, i), "active": True, "coefficient": 1.0,
         "family": "linear", "inverted": False, "window": {"min": low, "max": high, "start": low, "end": high}}
        for i, label in enumerate(channel_names)
    ]
    return {"name": name, "channels": channels, "rdefs": {"model": "color", "defaultT": 0, "defaultZ": 0}}


def multiscales_metadata(
    name: str, n_levels: int, pixel_size_um: float | None, z_spacing_um: float | None, version: str
) -> dict[str, Any]:
    """One ``multiscales`` entry: TCZYX axes and a scale transform per level (YX doubles per level)."""
    axes = []
    for axis in AXES:
        entry: dict[str, Any] = {"name": axis, "type": _AXIS_TYPES[axis]}
        if axis in "yx" and pixel_size_um is not None or axis == "z" and z_spacing_um is not None:
            entry["unit"] = "micrometer"
        axes.append(entry)
    yx = 1.0 if pixel_size_um is None else float(pixel_size_um)
    zs = 1.0 if z_spacing_um is None else float(z_spacing_um)
    datasets = [
        {"path": str(level),
         "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, zs, yx * 2**level, yx * 2**level]}]}
        for level in range(n_levels)
    ]
    meta: dict[str, Any] = {"name": name, "axes": axes, "datasets": datasets}
    if version == "0.4":
        meta["version"] = "0.4"
    return meta


def _ome(attrs: dict[str, Any], version: str) -> dict[str, Any]:
    """Wrap OME attributes the way each version stores them (0.5: under 'ome'; 0.4: top level)."""
    if version == "0.5":
        return {"ome": {"version": "0.5", **attrs}}
    return attrs


def _array_metadata(shape, dtype, chunks, shards, config: ZarrConfig):
    """The metadata object of one empty array, built once and reused for every field."""
    kwargs: dict[str, Any] = {
        "shape": shape, "dtype": dtype, "chunks": chunks, "compressors": _compressors(config),
        "fill_value": 0, "zarr_format": config.zarr_format,
    }
    if config.zarr_format == 3:
        kwargs |= {"shards": shards, "dimension_names": list(AXES)}
    else:
        kwargs |= {"filters": None, "chunk_key_encoding": {"name": "v2", "separator": "/"}}
    return zarr.create_array(zarr.storage.MemoryStore(), **kwargs).metadata


def create_plate(
    path: str | os.PathLike,
    *,
    plate_name: str,
    wells: list[str],
    fields: int,
    shape_tczyx: tuple[int, int, int, int, int],
    dtype: Any,
    channel_names: list[str],
    rows: list[str] | None = None,
    columns: list[int] | None = None,
    pixel_size_um: float | None = None,
    z_spacing_um: float | None = None,
    zarr_config: ZarrConfig | None = None,
    n_levels: int = 1,
    overwrite: bool = False,
) -> PlateLayout:
    """Write the metadata of a whole plate and its empty arrays, before any pixels.

    ``rows``/``columns`` default to those the wells use; ``fields`` is the number of fields per well;
    ``shape_tczyx`` is the full-resolution shape of every field. An existing ``path`` raises
    ``FileExistsError`` unless ``overwrite=True``, which replaces it only once the new plate is complete.
    """
    config = zarr_config or ZarrConfig()
    version = config.ome_zarr_version
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
    if len(shape_tczyx) != 5 or any(int(s) < 1 for s in shape_tczyx):
        raise ValueError(f"shape_tczyx={shape_tczyx!r} must be five positive sizes (T, C, Z, Y, X)")
    shape_tczyx = tuple(int(s) for s in shape_tczyx)
    if len(channel_names) != shape_tczyx[1]:
        raise ValueError(f"{len(channel_names)} channel names for {shape_tczyx[1]} channels in shape_tczyx")
    if fields < 1 or n_levels < 1:
        raise ValueError(f"fields={fields} and n_levels={n_levels} must be >= 1")
    dtype = np.dtype(dtype)
    split = {w: split_well(w) for w in wells}
    if len(split) != len(wells):
        raise ValueError(f"duplicate wells in {wells}")
    rows = list(rows) if rows else sorted({r for r, _ in split.values()}, key=row_number)
    columns = [int(c) for c in columns] if columns else sorted({c for _, c in split.values()})
    for well, (r, c) in split.items():
        if r not in rows or c not in columns:
            raise ValueError(f"well {well} is outside the rows {rows} / columns {columns}")

    plate_meta = {
        "name": plate_name,
        "rows": [{"name": r} for r in rows],
        "columns": [{"name": str(c)} for c in columns],
        "wells": [{"path": f"{r}/{c}", "rowIndex": rows.index(r), "columnIndex": columns.index(c)}
                  for r, c in split.values()],
        "field_count": fields,
        "acquisitions": [{"id": 0, "name": plate_name}],
    }
    if version == "0.4":
        plate_meta["version"] = "0.4"
    well_meta = {"images": [{"path": str(f), "acquisition": 0} for f in range(fields)]}
    if version == "0.4":
        well_meta["version"] = "0.4"
    omero = omero_metadata(channel_names, dtype, plate_name)
    chunks, shards, array_meta = [], [], []
    for level in range(n_levels):
        shape = level_shape(shape_tczyx, level)
        level_chunks, level_shards = plan_chunks(shape, dtype, config)
        chunks.append(level_chunks)
        shards.append(level_shards)
        array_meta.append(_array_metadata(shape, dtype, level_chunks, level_shards, config))

    fmt = config.zarr_format
    # Every row, well and field shares its metadata but for the field's name: each document is
    # serialised once and copied (the field name is substituted into a placeholder).
    row_doc = _documents(GroupMetadata(zarr_format=fmt))
    well_doc = _documents(GroupMetadata(attributes=_ome({"well": well_meta}, version), zarr_format=fmt))
    image = {"multiscales": [multiscales_metadata(_FIELD_NAME, n_levels, pixel_size_um, z_spacing_um, version)],
             "omero": omero}
    field_doc = _documents(GroupMetadata(attributes=_ome(image, version), zarr_format=fmt))
    level_docs = [_documents(meta) for meta in array_meta]
    documents: dict[str, dict[str, bytes]] = {
        "": _documents(GroupMetadata(attributes=_ome({"plate": plate_meta}, version), zarr_format=fmt))
    }
    for r in rows:
        documents[r] = row_doc
    for well, (r, c) in split.items():
        documents[f"{r}/{c}"] = well_doc
        for f in range(fields):
            name = json.dumps(f"{well}/{f}").encode()
            documents[f"{r}/{c}/{f}"] = {k: v.replace(_FIELD_NAME_JSON, name) for k, v in field_doc.items()}
            for level in range(n_levels):
                documents[f"{r}/{c}/{f}/{level}"] = level_docs[level]

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        _write_documents(tmp, documents)
        if target.exists():  # overwrite: keep the old plate until the new one is complete
            trash = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, trash)
            os.replace(tmp, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PlateLayout(
        path=str(target), plate_name=plate_name, wells=tuple(f"{r}{c:02d}" for r, c in split.values()),
        fields=fields, shape_tczyx=shape_tczyx, dtype=dtype.name, channel_names=tuple(channel_names),
        n_levels=n_levels, ome_zarr_version=version, chunk_strategy=config.chunk_strategy.value,
        chunks=tuple(chunks), shards=tuple(shards),
    )


_FIELD_NAME = "__hcsgraph_field_name__"
_FIELD_NAME_JSON = json.dumps(_FIELD_NAME).encode()


def _documents(meta: Any) -> dict[str, bytes]:
    """Zarr's own serialisation of a metadata object: file name → bytes."""
    from zarr.core.buffer import default_buffer_prototype

    return {name: buf.to_bytes() for name, buf in meta.to_buffer_dict(default_buffer_prototype()).items()}


def _write_documents(root: Path, documents: dict[str, dict[str, bytes]]) -> None:
    """Write the metadata files of every node into the (fresh, temporary) store directory.

    Plain file writes: going through a store per node costs ~10× more on a 384-well plate.
    """
    for key, files in documents.items():
        folder = root / key if key else root
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)


def downsample_2x(data: np.ndarray) -> np.ndarray:
    """Halve the last two axes by 2×2 block means (edges replicated); the dtype is kept (integers rounded)."""
    y, x = data.shape[-2:]
    pad = [(0, 0)] * (data.ndim - 2) + [(0, y % 2), (0, x % 2)]
    padded = np.pad(data, pad, mode="edge") if (y % 2 or x % 2) else data
    shape = padded.shape[:-2] + (padded.shape[-2] // 2, 2, padded.shape[-1] // 2, 2)
    mean = padded.reshape(shape).mean(axis=(-3, -1), dtype=np.float64)
    if np.issubdtype(data.dtype, np.integer) or data.dtype == np.bool_:
        mean = np.rint(mean)
    return mean.astype(data.dtype)


def _open_level(path: str | os.PathLike, well: str, field: int, level: int) -> zarr.Array:
    array_path = f"{well_path(well)}/{int(field)}/{level}"
    try:
        return zarr.open_array(store=os.fspath(path), path=array_path, mode="r+")
    except (FileNotFoundError, zarr.errors.ArrayNotFoundError, zarr.errors.NodeTypeValidationError) as exc:
        raise FileNotFoundError(
            f"no array for well {well}, field {field}, level {level} at {path}/{array_path}; "
            "was the plate created with create_plate() with this well and field count?"
        ) from exc


ArrayCache = dict[tuple[str, str, int, int], zarr.Array]
"""Opened level arrays by ``(plate path, well, field, level)``: pass one dict to several writes to open each once."""


def _level_array(path, well: str, field: int, level: int, arrays: ArrayCache | None) -> zarr.Array:
    if arrays is None:
        return _open_level(path, well, field, level)
    key = (os.fspath(path), well, int(field), level)
    array = arrays.get(key)
    if array is None:
        array = arrays[key] = _open_level(path, well, field, level)
    return array


def _write(path, well: str, field: int, selection: tuple, data: np.ndarray, n_levels: int, what: str,
           arrays: ArrayCache | None = None) -> None:
    data = np.asarray(data)
    for level in range(n_levels):
        array = _level_array(path, well, field, level, arrays)
        if level == 0:
            expected = tuple(array.shape[len(selection):])
            if data.shape != expected:
                raise ValueError(f"{what} of well {well}, field {field}: shape {data.shape}, the plate expects {expected}")
            if data.dtype != array.dtype:
                if not np.can_cast(data.dtype, array.dtype, casting="safe"):
                    raise TypeError(
                        f"{what} of well {well}, field {field}: dtype {data.dtype} does not fit the plate's "
                        f"{array.dtype} without loss; convert it explicitly"
                    )
                data = data.astype(array.dtype)
        else:
            data = downsample_2x(data)
        array[selection] = data


def write_plane(
    path: str | os.PathLike, well: str, field: int, t: int, c: int, z: int, plane: np.ndarray, n_levels: int = 1,
    *, arrays: ArrayCache | None = None,
) -> None:
    """Write one YX plane (and its ``n_levels - 1`` downsampled levels); ``field``/``t``/``c``/``z`` are 0-based.

    Safe to run in parallel for different planes under the ADAPTIVE strategy (one chunk or shard per plane).
    ``arrays``: a dict shared by consecutive calls on one plate, so each level array is opened once.
    """
    _write(path, well, field, (int(t), int(c), int(z)), plane, n_levels, "plane", arrays)


def write_stack(
    path: str | os.PathLike, well: str, field: int, t: int, c: int, stack_zyx: np.ndarray, n_levels: int = 1
) -> None:
    """Write all Z planes of one (t, c) of a field (0-based); the unit of work for the FIELD strategy."""
    _write(path, well, field, (int(t), int(c)), stack_zyx, n_levels, "z-stack")


def write_field(path: str | os.PathLike, well: str, field: int, data_tczyx: np.ndarray, n_levels: int = 1) -> None:
    """Write a whole field (TCZYX); the unit of work for the WELL strategy."""
    _write(path, well, field, (), data_tczyx, n_levels, "field")


def mark_well_complete(path: str | os.PathLike, well: str) -> None:
    """Record in the well's group attributes that every write of the well has landed."""
    group = zarr.open_group(store=os.fspath(path), path=well_path(well), mode="r+")
    group.attrs.update({COMPLETE_KEY: {"complete": True}})


def well_is_complete(path: str | os.PathLike, well: str) -> bool:
    """True once :func:`mark_well_complete` ran for ``well``."""
    group = zarr.open_group(store=os.fspath(path), path=well_path(well), mode="r")
    return bool(dict(group.attrs).get(COMPLETE_KEY, {}).get("complete", False))


def read_plate_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The plate group's attributes as stored (0.5: ``{"ome": {...}}``; 0.4: ``{"plate": {...}}``)."""
    root = Path(path)
    if (root / "zarr.json").is_file():
        return json.loads((root / "zarr.json").read_text()).get("attributes", {})
    return json.loads((root / ".zattrs").read_text())
