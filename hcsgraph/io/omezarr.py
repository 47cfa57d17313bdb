"""Write OME-Zarr HCS plates: OME-NGFF 0.5 on Zarr v3 (default) or 0.4 on Zarr v2.

Two phases, so that parallel writers never collide:

1. :func:`create_plate` (once, on the client) writes every group's metadata (plate → row → well →
   field, with ``plate``, ``well``, ``multiscales`` and ``omero``) and every empty array's metadata. The
   hierarchy is built in a temporary directory beside ``path`` and renamed into place, so a plate is
   either fully described or absent. At a URL (``s3://...``, with ``storage_options``) the documents are
   written in place, the root document last: a plate without it is not a plate.
2. :func:`write_planes` (on workers) fills YX planes of one field and their pyramid levels, with one
   assignment per chunk (or shard). Indices ``field``, ``t``, ``c`` and ``z`` are **0-based** here (the
   plate index is 1-based: ``field = site - 1``). :func:`write_plane`, :func:`write_stack` and
   :func:`write_field` are its one-plane, one-z-stack and whole-field forms.

Arrays are TCZYX (``dimension_names`` on Zarr v3), chunked by :func:`hcsgraph.io.chunking.plan_chunks`
following ``ZarrConfig.chunk_strategy``:

* ADAPTIVE: one chunk per YX plane while the plane is at most ``max_chunk_bytes``; larger planes are
  cut into square power-of-two tiles, and once a plane has ``shard_min_chunks`` tiles or more (Zarr v3)
  the tiles of a plane are one shard. Each plane is its own chunk(s) or shard.
* FIELD: one chunk per z-stack (all Z of one t, c).
* WELL: one chunk per field array (all of T, C, Z).

:func:`hcsgraph.io.chunking.chunk_owner` names the planes that share a chunk file: one writer per
``(well, field) + chunk_owner(strategy, t, c, z)`` is safe, more are not.

Pyramid levels halve YX by 2×2 block means (``downsample="mean"``, for intensities) or by taking one
pixel per block (``"nearest"``, for label images: every value exists in its source block).

The omero channel windows start at :func:`initial_window` (the dtype's range up to 16-bit integers,
else 0..1); :func:`set_channel_windows` sets them from the data once it is written.

The cost of creating and writing grows linearly with the number of wells: nothing rescans the hierarchy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import stat
import tempfile
import threading
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from zarr.core.group import GroupMetadata
from zarr.core.sync import sync

from hcsgraph.config import ZarrConfig
from hcsgraph.io import location
from hcsgraph.io.atomic import temporary_name
from hcsgraph.io.chunking import compressors_for, plan_chunks
from hcsgraph.plate.index import hex_colour, physical_size, row_number, split_well

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
"""Attribute holding hcsgraph's own records (not OME metadata) on plate, well and field groups."""
WRITER_RECORD = {"writer": "hcsgraph"}
"""``attributes[COMPLETE_KEY]`` of a plate's root group: marks a plate hcsgraph wrote (and may replace)."""
DATA_WINDOWS_KEY = "window_from_data"
"""In a field group's ``attributes[COMPLETE_KEY]``: channel indices whose omero window came from the data."""
DownsampleMethod = Literal["mean", "nearest"]
DOWNSAMPLE_METHODS = ("mean", "nearest")
Plane = tuple[int, int, int]
"""A plane of a field array: ``(t, c, z)``, 0-based."""


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


def channel_colour(name: str, index: int) -> str:
    """A display colour (RRGGBB) for a channel: from its name when it hints at a dye, else a palette."""
    lower = name.lower()
    for hint, colour in _COLOURS.items():
        if hint in lower:
            return colour
    return _PALETTE[index % len(_PALETTE)]


def initial_window(dtype: Any) -> tuple[float, float]:
    """The omero window of a channel before any data is seen.

    The dtype's range for integers of at most 16 bits (0..255 for uint8, 0..65535 for uint16,
    -32768..32767 for int16); 0..1 for bool, floats and wider integers, whose range says nothing about
    the data (an int32 label image or a float image). :func:`set_channel_windows` replaces it.
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "iu" and dtype.itemsize <= 2:
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return 0.0, 1.0


def omero_metadata(channel_names: list[str], dtype: np.dtype, name: str,
                   colors: Sequence[str | None] | None = None) -> dict[str, Any]:
    """``omero`` rendering metadata: one channel per name, a colour and the :func:`initial_window` of ``dtype``.

    ``colors``: the instrument's colour of each channel (``RRGGBB``, ``#RRGGBB`` or ``#AARRGGBB``; None
    or a shorter list where it gives none); the others get :func:`channel_colour`.
    """
    low, high = initial_window(dtype)
    given = list(colors or [])
    channels = [
        {"label": label,
         "color": (hex_colour(given[i]) if i < len(given) else None) or channel_colour(label, i),
         "active": True, "coefficient": 1.0,
         "family": "linear", "inverted": False, "window": {"min": low, "max": high, "start": low, "end": high}}
        for i, label in enumerate(channel_names)
    ]
    return {"name": name, "channels": channels, "rdefs": {"model": "color", "defaultT": 0, "defaultZ": 0}}


def multiscales_metadata(
    name: str, n_levels: int, pixel_size_um: float | None, z_spacing_um: float | None, version: str,
    time_interval_s: float | None = None,
) -> dict[str, Any]:
    """One ``multiscales`` entry: TCZYX axes and a scale transform per level (YX doubles per level).

    The scale is ``[t, 1, z, y, x]``: ``time_interval_s`` (unit ``second``), ``z_spacing_um`` and
    ``pixel_size_um`` (unit ``micrometer``). Where one is unknown (None) its scale is 1 and its axis has
    no unit, so readers can tell "1 pixel" from "1 µm".
    """
    known = {"t": time_interval_s, "z": z_spacing_um, "y": pixel_size_um, "x": pixel_size_um}
    units = {"t": "second", "z": "micrometer", "y": "micrometer", "x": "micrometer"}
    axes = []
    for axis in AXES:
        entry: dict[str, Any] = {"name": axis, "type": _AXIS_TYPES[axis]}
        if known.get(axis) is not None:
            entry["unit"] = units[axis]
        axes.append(entry)
    yx = 1.0 if pixel_size_um is None else float(pixel_size_um)
    zs = 1.0 if z_spacing_um is None else float(z_spacing_um)
    ts = 1.0 if time_interval_s is None else float(time_interval_s)
    datasets = [
        {"path": str(level),
         "coordinateTransformations": [{"type": "scale", "scale": [ts, 1.0, zs, yx * 2**level, yx * 2**level]}]}
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
        "shape": shape, "dtype": dtype, "chunks": chunks, "compressors": compressors_for(config),
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
    storage_options: Mapping[str, Any] | None = None,
    time_interval_s: float | None = None,
    channel_colors: Sequence[str | None] | None = None,
) -> PlateLayout:
    """Write the metadata of a whole plate and its empty arrays, before any pixels.

    ``rows``/``columns`` default to those the wells use; ``fields`` is the number of fields per well;
    ``shape_tczyx`` is the full-resolution shape of every field. An existing ``path`` raises
    ``FileExistsError`` unless ``overwrite=True``, which replaces it only once the new plate is complete,
    and only if it is a plate hcsgraph wrote (:func:`is_hcsgraph_plate`); anything else raises
    ``FileExistsError`` and is left as it is. The plate directory gets the process umask's permissions.

    ``path`` may be a URL (``s3://bucket/out/plate.ome.zarr``; ``storage_options``: fsspec's options for
    it). There nothing can be renamed into place: every group and array document is written directly
    (concurrently, one ``PUT`` each) and the plate's root document last, so a plate whose root document
    is there is complete and a partial one is never taken for a plate (nor for one hcsgraph wrote).
    ``overwrite=True`` on a URL removes the old plate's root document first, then every object under the
    prefix, then writes the new plate: there the old plate is gone before the new one is complete.

    ``pixel_size_um``, ``z_spacing_um`` and ``time_interval_s`` become the fields' scale with units
    (None: unknown, scale 1 without a unit; see :func:`multiscales_metadata`); ``channel_colors`` the
    omero colours (one per channel name, None where the instrument gives none; see :func:`omero_metadata`).
    """
    config = zarr_config or ZarrConfig()
    version = config.ome_zarr_version
    remote = location.is_url(path)
    target = Path(path) if not remote else None
    url = location.split_credentials(os.fspath(path))[0].rstrip("/") if remote else ""
    shown = location.redact(url) if remote else str(target)
    if location.exists(url, storage_options) if remote else os.path.lexists(target):
        if not overwrite:
            raise FileExistsError(f"{shown} already exists; pass overwrite=True to replace it")
        if not is_hcsgraph_plate(url if remote else target, storage_options=storage_options):
            raise FileExistsError(
                f"{shown} exists and is not an OME-Zarr plate written by hcsgraph (no plate metadata with "
                f"the hcsgraph writer record in zarr.json/.zattrs); refusing to replace it: remove it yourself "
                "or choose another path"
            )
    if len(shape_tczyx) != 5 or any(int(s) < 1 for s in shape_tczyx):
        raise ValueError(f"shape_tczyx={shape_tczyx!r} must be five positive sizes (T, C, Z, Y, X)")
    shape_tczyx = tuple(int(s) for s in shape_tczyx)
    if len(channel_names) != shape_tczyx[1]:
        raise ValueError(f"{len(channel_names)} channel names for {shape_tczyx[1]} channels in shape_tczyx")
    if fields < 1 or n_levels < 1:
        raise ValueError(f"fields={fields} and n_levels={n_levels} must be >= 1")
    pixel_size_um = physical_size(pixel_size_um, "pixel_size_um")
    z_spacing_um = physical_size(z_spacing_um, "z_spacing_um")
    time_interval_s = physical_size(time_interval_s, "time_interval_s")
    if channel_colors is not None and len(channel_colors) > len(channel_names):
        raise ValueError(f"{len(channel_colors)} channel colours for {len(channel_names)} channels")
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
    omero = omero_metadata(channel_names, dtype, plate_name, channel_colors)
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
    image = {"multiscales": [multiscales_metadata(_FIELD_NAME, n_levels, pixel_size_um, z_spacing_um, version,
                                                  time_interval_s)],
             "omero": omero}
    field_doc = _documents(GroupMetadata(attributes=_ome(image, version), zarr_format=fmt))
    level_docs = [_documents(meta) for meta in array_meta]
    root_attrs = _ome({"plate": plate_meta}, version) | {COMPLETE_KEY: dict(WRITER_RECORD)}
    documents: dict[str, dict[str, bytes]] = {"": _documents(GroupMetadata(attributes=root_attrs, zarr_format=fmt))}
    for r in rows:
        documents[r] = row_doc
    for well, (r, c) in split.items():
        documents[f"{r}/{c}"] = well_doc
        for f in range(fields):
            name = json.dumps(f"{well}/{f}").encode()
            documents[f"{r}/{c}/{f}"] = {k: v.replace(_FIELD_NAME_JSON, name) for k, v in field_doc.items()}
            for level in range(n_levels):
                documents[f"{r}/{c}/{f}/{level}"] = level_docs[level]

    layout = PlateLayout(
        path=url if remote else str(target), plate_name=plate_name,
        wells=tuple(f"{r}{c:02d}" for r, c in split.values()),
        fields=fields, shape_tczyx=shape_tczyx, dtype=dtype.name, channel_names=tuple(channel_names),
        n_levels=n_levels, ome_zarr_version=version, chunk_strategy=config.chunk_strategy.value,
        chunks=tuple(chunks), shards=tuple(shards),
    )
    if remote:
        _write_documents_remote(url, documents, storage_options, replace=overwrite)
        return layout
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it 0700
        _write_documents(tmp, documents)
        if os.path.lexists(target):  # overwrite: keep the old plate until the new one is complete
            trash = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, trash)
            os.replace(tmp, target)
            if trash.is_symlink():
                trash.unlink()
            else:
                shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return layout


ROOT_DOCUMENTS = ("zarr.json", ".zattrs", ".zgroup")
"""The documents of a plate's root group (Zarr v3, v2)."""


def _write_documents_remote(url: str, documents: dict[str, dict[str, bytes]], storage_options: Any,
                            replace: bool) -> None:
    """Write a plate's documents at a URL: every node but the root concurrently, then the root's.

    ``replace``: an hcsgraph plate is there; its root documents are removed first (it stops being a
    plate), then everything under the prefix.
    """
    fs, base = location.filesystem(url, storage_options)
    base = base.rstrip("/")
    if replace:
        for name in ROOT_DOCUMENTS:
            location.remove(f"{url}/{name}", storage_options, missing_ok=True)
        location.remove(url, storage_options, recursive=True, missing_ok=True)
    last = "zarr.json" if "zarr.json" in documents[""] else ".zattrs"  # the document that makes it a plate
    rest = {f"{base}/{key}/{name}" if key else f"{base}/{name}": data
            for key, files in documents.items() for name, data in files.items() if key or name != last}
    if rest:
        location.call("cannot write the plate's metadata", url, fs.pipe, rest, storage_options=storage_options)
    location.call("cannot write the plate's metadata", url, fs.pipe_file, f"{base}/{last}", documents[""][last],
                  storage_options=storage_options)


def _root_documents(path: str | os.PathLike, storage_options: Any = None) -> tuple[bytes | None, bytes | None]:
    """``(zarr.json, .zattrs)`` bytes of a group (None where absent); ``.zattrs`` is read only without ``zarr.json``."""
    if location.is_url(path):
        url = location.split_credentials(os.fspath(path))[0].rstrip("/")
        found = location.read_many([f"{url}/zarr.json"], storage_options)[f"{url}/zarr.json"]
        if found is not None:
            return found, None
        return None, location.read_many([f"{url}/.zattrs"], storage_options)[f"{url}/.zattrs"]
    root = Path(path)
    if (root / "zarr.json").is_file():
        return (root / "zarr.json").read_bytes(), None
    if (root / ".zattrs").is_file():
        return None, (root / ".zattrs").read_bytes()
    return None, None


def is_hcsgraph_plate(path: str | os.PathLike, *, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether ``path`` is an OME-Zarr plate hcsgraph wrote: a root group with ``plate`` metadata and
    hcsgraph's writer record, in ``zarr.json`` (0.5) or ``.zattrs`` (0.4). ``path`` may be a URL
    (``storage_options``: fsspec's options); a store that cannot be reached raises its error there."""
    if not location.is_url(path) and not Path(path).is_dir():
        return False
    try:
        v3, v2 = _root_documents(path, storage_options)
        if v3 is not None:
            document = json.loads(v3)
            attrs = document.get("attributes", {}) if document.get("node_type") == "group" else {}
            ome = attrs.get("ome", {})
        elif v2 is not None:
            attrs = ome = json.loads(v2)
        else:
            return False
    except ValueError:
        return False
    except OSError:
        if location.is_url(path):
            raise
        return False
    if not isinstance(attrs, dict) or not isinstance(ome, dict) or not isinstance(ome.get("plate"), dict):
        return False
    record = attrs.get(COMPLETE_KEY)
    return isinstance(record, dict) and record.get("writer") == WRITER_RECORD["writer"]


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc/self/status)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore at once (other threads may create files meanwhile)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


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


def downsample_2x(data: np.ndarray, method: DownsampleMethod = "mean") -> np.ndarray:
    """Halve the last two axes (odd sizes rounded up), keeping the dtype.

    ``"mean"``: 2×2 block means (edges replicated; integers rounded), for intensities.
    ``"nearest"``: the top-left pixel of each 2×2 block, so every value exists in its source block
    (label images: no invented labels).
    """
    if method == "nearest":
        return np.ascontiguousarray(data[..., ::2, ::2])
    if method != "mean":
        raise ValueError(f"downsample={method!r}: expected one of {DOWNSAMPLE_METHODS}")
    y, x = data.shape[-2:]
    pad = [(0, 0)] * (data.ndim - 2) + [(0, y % 2), (0, x % 2)]
    padded = np.pad(data, pad, mode="edge") if (y % 2 or x % 2) else data
    shape = padded.shape[:-2] + (padded.shape[-2] // 2, 2, padded.shape[-1] // 2, 2)
    mean = padded.reshape(shape).mean(axis=(-3, -1), dtype=np.float64)
    if np.issubdtype(data.dtype, np.integer) or data.dtype == np.bool_:
        mean = np.rint(mean)
    return mean.astype(data.dtype)


def zarr_store(path: str | os.PathLike, storage_options: Mapping[str, Any] | None = None, *,
               read_only: bool = False) -> Any:
    """What to give zarr as ``store=`` for ``path``: the local path itself, or for a URL a
    ``zarr.storage.FsspecStore`` on the filesystem :func:`hcsgraph.io.location.filesystem` configures
    (credentials from ``storage_options`` or fsspec's defaults, S3 timeouts and retries)."""
    if not location.is_url(path):
        return os.fspath(path)
    from zarr.storage import FsspecStore

    fs, fs_path = location.filesystem(path, storage_options, asynchronous=True)
    return FsspecStore(fs=fs, path=fs_path.rstrip("/"), read_only=read_only)


def _open_level(path: str | os.PathLike, well: str, field: int, level: int, image: str = "",
                storage_options: Any = None) -> zarr.Array:
    inner = f"{image.strip('/')}/" if image else ""
    array_path = f"{well_path(well)}/{int(field)}/{inner}{level}"
    remote = location.is_url(path)
    try:
        return zarr.open_array(store=zarr_store(path, storage_options), path=array_path, mode="r+")
    except (FileNotFoundError, zarr.errors.ArrayNotFoundError, zarr.errors.NodeTypeValidationError) as exc:
        raise FileNotFoundError(
            f"no array for well {well}, field {field}, level {level} at {location.redact(os.fspath(path))}/"
            f"{array_path}; was the plate created with create_plate() with this well and field count?"
        ) from (None if remote else exc)
    except location.StorageError:
        raise
    except Exception as exc:
        if not remote:
            raise
        raise location.error_for(exc, f"{os.fspath(path)}/{array_path}", storage_options,
                                 "cannot open the array") from None


ArrayCache = dict[tuple[str, str, int, int, str], zarr.Array]
"""Opened level arrays by ``(plate path, well, field, level, image)``: pass one dict to several writes to open
each once."""


def _level_array(path, well: str, field: int, level: int, arrays: ArrayCache, image: str = "",
                 storage_options: Any = None) -> zarr.Array:
    key = (os.fspath(path), well, int(field), level, image)
    array = arrays.get(key)
    if array is None:
        array = arrays[key] = _open_level(path, well, field, level, image, storage_options)
    return array


def _write(
    path, well: str, field: int, planes: list[Plane], data: Any, expected: tuple[int, ...], n_levels: int,
    downsample: str, arrays: ArrayCache, what: str, image: str = "", storage_options: Any = None,
) -> None:
    """Check ``data`` (the caller's shape ``expected``) and write it as ``planes`` on every level."""
    if downsample not in DOWNSAMPLE_METHODS:
        raise ValueError(f"downsample={downsample!r}: expected one of {DOWNSAMPLE_METHODS}")
    array = _level_array(path, well, field, 0, arrays, image, storage_options)
    data = np.asarray(data)
    if data.shape != expected:
        raise ValueError(f"{what} of well {well}, field {field}: shape {data.shape}, the plate expects {expected}")
    if data.dtype != array.dtype:
        if not np.can_cast(data.dtype, array.dtype, casting="safe"):
            raise TypeError(
                f"{what} of well {well}, field {field}: dtype {data.dtype} does not fit the plate's "
                f"{array.dtype} without loss; convert it explicitly"
            )
        data = data.astype(array.dtype)
    bounds = array.shape[:3]
    for plane in planes:
        if not all(0 <= i < n for i, n in zip(plane, bounds, strict=True)):
            raise IndexError(f"{what} of well {well}, field {field}: plane (t, c, z)={plane} is outside {bounds}")
    if len(set(planes)) != len(planes):
        raise ValueError(f"{what} of well {well}, field {field}: a plane (t, c, z) is given twice in {planes}")
    stack = data.reshape((len(planes), *array.shape[-2:]))
    for level in range(n_levels):
        if level:
            array = _level_array(path, well, field, level, arrays, image, storage_options)
            stack = downsample_2x(stack, downsample)
        _write_regions(array, planes, stack, os.fspath(path) if location.is_url(path) else None, storage_options)


def _write_regions(array: zarr.Array, planes: list[Plane], stack: np.ndarray, url: str | None = None,
                   storage_options: Any = None) -> None:
    """Write ``stack[i]`` as plane ``planes[i]``: one assignment per chunk (or shard) the planes touch.

    A chunk region the planes cover only in part is read once, completed and written back once.
    """
    unit = (array.shards or array.chunks)[:3]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, plane in enumerate(planes):
        groups.setdefault(tuple(p // u for p, u in zip(plane, unit, strict=True)), []).append(i)
    target = array.async_array

    async def region(key: tuple[int, ...], members: list[int]) -> None:
        low = [k * u for k, u in zip(key, unit, strict=True)]
        high = [min(a + u, n) for a, u, n in zip(low, unit, array.shape[:3], strict=True)]
        selection = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
        size = math.prod(b - a for a, b in zip(low, high, strict=True))
        if size == 1:
            block = stack[members[0]][None, None, None]
        else:
            if len(members) == size:
                block = np.empty((*(b - a for a, b in zip(low, high, strict=True)), *stack.shape[1:]), stack.dtype)
            else:
                block = np.array(await target.getitem(selection))
            for i in members:
                block[tuple(p - a for p, a in zip(planes[i], low, strict=True))] = stack[i]
        await target.setitem(selection, block)

    async def write_all() -> None:
        await asyncio.gather(*(region(key, members) for key, members in groups.items()))

    try:
        sync(write_all())
    except location.StorageError:
        raise
    except Exception as exc:  # a store failure: reported with the URL, never a secret
        if url is None:
            raise
        raise location.error_for(exc, f"{url}/{array.path}", storage_options, "cannot write the planes") from None


def write_planes(
    path: str | os.PathLike, well: str, field: int, planes: Sequence[Plane], data: np.ndarray, n_levels: int = 1,
    *, downsample: DownsampleMethod = "mean", arrays: ArrayCache | None = None, image: str = "",
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Write YX planes of one field: ``data[i]`` (``data`` is ``[N, Y, X]``) is plane ``planes[i] = (t, c, z)``.

    Every pyramid level up to ``n_levels`` is written too, each downsampled from the one above by
    ``downsample`` ("mean" for intensities, "nearest" for labels). The planes are grouped by chunk (or
    shard) and each chunk is assigned once; a chunk the planes cover in part is read, completed and
    written back once. Calls on planes with different :func:`hcsgraph.io.chunking.chunk_owner` keys
    (or of different fields) may run in parallel; two calls on planes of one chunk may not.
    ``arrays``: a dict shared by consecutive calls on one plate, so each level array is opened once.
    Indices are 0-based. ``image``: a multiscale image inside the field instead of the field's own,
    e.g. ``"labels/nuclei"`` (see :mod:`hcsgraph.io.omezarr_labels`). ``path`` may be a URL
    (``storage_options``: fsspec's options for it): each chunk or shard is one ``PUT``, the chunks of one
    call written concurrently.
    """
    arrays = {} if arrays is None else arrays
    shape = _level_array(path, well, field, 0, arrays, image, storage_options).shape
    planes = [(int(t), int(c), int(z)) for t, c, z in planes]
    _write(path, well, field, planes, data, (len(planes), *shape[-2:]), n_levels, downsample, arrays, "planes",
           image, storage_options)


def write_plane(
    path: str | os.PathLike, well: str, field: int, t: int, c: int, z: int, plane: np.ndarray, n_levels: int = 1,
    *, downsample: DownsampleMethod = "mean", arrays: ArrayCache | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Write one YX plane (and its ``n_levels - 1`` downsampled levels); ``field``/``t``/``c``/``z`` are 0-based.

    Safe to run in parallel for different planes only under the ADAPTIVE strategy (one chunk or shard
    per plane); see :func:`write_planes`.
    """
    arrays = {} if arrays is None else arrays
    shape = _level_array(path, well, field, 0, arrays, "", storage_options).shape
    _write(path, well, field, [(int(t), int(c), int(z))], plane, tuple(shape[-2:]), n_levels, downsample, arrays,
           "plane", "", storage_options)


def write_stack(
    path: str | os.PathLike, well: str, field: int, t: int, c: int, stack_zyx: np.ndarray, n_levels: int = 1,
    *, downsample: DownsampleMethod = "mean", arrays: ArrayCache | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Write all Z planes of one (t, c) of a field (0-based); the unit of work for the FIELD strategy."""
    arrays = {} if arrays is None else arrays
    shape = _level_array(path, well, field, 0, arrays, "", storage_options).shape
    planes = [(int(t), int(c), z) for z in range(shape[2])]
    _write(path, well, field, planes, stack_zyx, tuple(shape[2:]), n_levels, downsample, arrays, "z-stack", "",
           storage_options)


def write_field(
    path: str | os.PathLike, well: str, field: int, data_tczyx: np.ndarray, n_levels: int = 1,
    *, downsample: DownsampleMethod = "mean", arrays: ArrayCache | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Write a whole field (TCZYX); the unit of work for the WELL strategy."""
    arrays = {} if arrays is None else arrays
    shape = _level_array(path, well, field, 0, arrays, "", storage_options).shape
    planes = [tuple(int(i) for i in p) for p in np.ndindex(*shape[:3])]
    _write(path, well, field, planes, data_tczyx, tuple(shape), n_levels, downsample, arrays, "field", "",
           storage_options)


# ---------------------------------------------------------------------------------------------
# channel windows


def _group_document(folder: Path, version: str) -> tuple[Path, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(file, document, attributes, OME attributes)`` of a group, as stored for ``version``."""
    file = folder / ("zarr.json" if version == "0.5" else ".zattrs")
    document = json.loads(file.read_bytes())
    return file, document, *_document_parts(document, version)


def _replace_json(file: Path, document: dict[str, Any]) -> None:
    """Rewrite a JSON file atomically (a temporary sibling renamed over it), keeping its permissions."""
    mode = stat.S_IMODE(os.stat(file).st_mode)
    tmp = temporary_name(os.fspath(file))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(json.dumps(document).encode())  # no indent: the C encoder, ~10x faster
        os.replace(tmp, file)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _document_parts(document: dict[str, Any], version: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(attributes, OME attributes)`` of a group document as stored for ``version``."""
    if version == "0.5":
        attrs = document.setdefault("attributes", {})
        return attrs, attrs.get("ome", {})
    return document, document


def _set_windows(folder: Path, version: str, windows: dict[int, tuple[float, float]], merge: bool) -> None:
    file, document, _, _ = _group_document(folder, version)
    _update_windows(document, version, windows, merge, file)
    _replace_json(file, document)


def _update_windows(document: dict[str, Any], version: str, windows: dict[int, tuple[float, float]], merge: bool,
                    file: Any) -> None:
    """Set the omero windows of ``windows`` in a field's group ``document`` (in place)."""
    attrs, ome = _document_parts(document, version)
    channels = ome.get("omero", {}).get("channels")
    if not isinstance(channels, list):
        raise ValueError(f"{file} has no omero channels")
    own = attrs.get(COMPLETE_KEY)
    own = attrs[COMPLETE_KEY] = dict(own) if isinstance(own, dict) else {}
    from_data = {int(c) for c in own.get(DATA_WINDOWS_KEY, [])}
    for c, (low, high) in windows.items():
        if c >= len(channels):
            raise ValueError(f"channel {c} is out of range: {file} has {len(channels)} channels")
        window = channels[c].get("window", {})
        if merge and c in from_data:
            low, high = min(low, float(window["start"])), max(high, float(window["end"]))
        channels[c]["window"] = {"start": low, "end": high, "min": low, "max": high}
        from_data.add(c)
    own[DATA_WINDOWS_KEY] = sorted(from_data)


def set_channel_windows(
    plate_path: str | os.PathLike, windows: Mapping[int, tuple[float, float]], *, merge: bool = True,
    max_workers: int | None = None, storage_options: Mapping[str, Any] | None = None,
) -> int:
    """Set the omero window of channels of every field of a plate from the data; returns the fields rewritten.

    For each ``c → (lo, hi)`` in ``windows`` (``c`` 0-based) every field's channel ``c`` gets
    ``window = {"start": lo, "end": hi, "min": lo, "max": hi}``. With ``merge=True`` a window an earlier
    call set (recorded in the field's ``attributes["hcsgraph"]["window_from_data"]``) widens to the
    union instead; the initial window from :func:`create_plate` is always replaced. Works on NGFF 0.5
    (``zarr.json``, under ``ome``) and 0.4 (``.zattrs``); each document is rewritten directly and
    atomically, ``max_workers`` threads at a time. Calls on one plate must not overlap.

    ``plate_path`` may be a URL (``storage_options``: fsspec's options): the plate's, wells' and fields'
    documents are read in three rounds of concurrent ``GET`` s and each field's is written back with one
    ``PUT`` (atomic per document).
    """
    clean: dict[int, tuple[float, float]] = {}
    for c, pair in windows.items():
        low, high = (float(v) for v in pair)
        if isinstance(c, bool) or int(c) != c or c < 0:
            raise ValueError(f"channel {c!r} must be a 0-based channel index")
        if not (math.isfinite(low) and math.isfinite(high)) or low > high:
            raise ValueError(f"window {pair!r} of channel {c} must be two finite numbers, low <= high")
        clean[int(c)] = (low, high)
    if not clean:
        return 0
    if location.is_url(plate_path):
        return _set_channel_windows_remote(location.split_credentials(os.fspath(plate_path))[0].rstrip("/"), clean,
                                           merge, storage_options)
    root = Path(plate_path)
    version = "0.5" if (root / "zarr.json").is_file() else "0.4"
    try:
        _, _, _, ome = _group_document(root, version)
        wells = [w["path"] for w in ome["plate"]["wells"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{root} is not an OME-Zarr plate: {exc}") from exc

    def images(well: str) -> list[Path]:
        _, _, _, well_ome = _group_document(root / well, version)
        return [root / well / image["path"] for image in well_ome["well"]["images"]]

    with ThreadPoolExecutor(max_workers=max_workers or min(32, 4 * (os.cpu_count() or 1))) as pool:
        folders = [folder for found in pool.map(images, wells) for folder in found]
        if folders:  # the fields of a plate share their channels: check once, before rewriting any
            channels = _group_document(folders[0], version)[3].get("omero", {}).get("channels", [])
            if max(clean) >= len(channels):
                raise ValueError(f"channel {max(clean)} is out of range: the plate {root} has {len(channels)} channels")
        list(pool.map(lambda folder: _set_windows(folder, version, clean, merge), folders))
    return len(folders)


def _set_channel_windows_remote(url: str, windows: dict[int, tuple[float, float]], merge: bool,
                                storage_options: Any) -> int:
    """:func:`set_channel_windows` on a plate at a URL: concurrent reads per level, one PUT per field."""
    v3, v2 = _root_documents(url, storage_options)
    version, name = ("0.5", "zarr.json") if v3 is not None else ("0.4", ".zattrs")
    shown = location.redact(url)
    try:
        _, ome = _document_parts(json.loads(v3 if v3 is not None else v2), version)
        wells = [w["path"] for w in ome["plate"]["wells"]]
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{shown} is not an OME-Zarr plate: {exc}") from exc

    def documents(folders: list[str]) -> dict[str, dict[str, Any]]:
        found = location.read_many([f"{url}/{folder}/{name}" for folder in folders], storage_options)
        out = {}
        for folder in folders:
            raw = found[f"{url}/{folder}/{name}"]
            if raw is None:
                raise FileNotFoundError(f"{shown}/{folder}/{name} is missing")
            out[folder] = json.loads(raw)
        return out

    well_docs = documents(wells)
    folders = [f"{well}/{image['path']}" for well in wells
               for image in _document_parts(well_docs[well], version)[1]["well"]["images"]]
    field_docs = documents(folders)
    if folders:  # the fields of a plate share their channels: check once, before rewriting any
        channels = _document_parts(field_docs[folders[0]], version)[1].get("omero", {}).get("channels", [])
        if max(windows) >= len(channels):
            raise ValueError(f"channel {max(windows)} is out of range: the plate {shown} has {len(channels)} channels")
    fs, base = location.filesystem(url, storage_options)
    updates = {}
    for folder, document in field_docs.items():
        _update_windows(document, version, windows, merge, f"{shown}/{folder}/{name}")
        updates[f"{base.rstrip('/')}/{folder}/{name}"] = json.dumps(document).encode()
    if updates:
        location.call("cannot write the channel windows", url, fs.pipe, updates, storage_options=storage_options)
    return len(folders)


def mark_well_complete(path: str | os.PathLike, well: str, *, storage_options: Mapping[str, Any] | None = None) -> None:
    """Record in the well's group attributes that every write of the well has landed (``path`` may be a URL)."""
    group = zarr.open_group(store=zarr_store(path, storage_options), path=well_path(well), mode="r+")
    group.attrs.update({COMPLETE_KEY: {"complete": True}})


def well_is_complete(path: str | os.PathLike, well: str, *, storage_options: Mapping[str, Any] | None = None) -> bool:
    """True once :func:`mark_well_complete` ran for ``well`` (``path`` may be a URL)."""
    group = zarr.open_group(store=zarr_store(path, storage_options, read_only=True), path=well_path(well), mode="r")
    return bool(dict(group.attrs).get(COMPLETE_KEY, {}).get("complete", False))


def read_plate_attrs(path: str | os.PathLike, *, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The plate group's attributes as stored (0.5: ``{"ome": {...}}``; 0.4: ``{"plate": {...}}``); ``path``
    may be a URL."""
    if location.is_url(path):
        v3, v2 = _root_documents(path, storage_options)
        if v3 is None and v2 is None:
            raise FileNotFoundError(f"{location.redact(os.fspath(path))}: no zarr.json or .zattrs")
        return json.loads(v3).get("attributes", {}) if v3 is not None else json.loads(v2)
    root = Path(path)
    if (root / "zarr.json").is_file():
        return json.loads((root / "zarr.json").read_text()).get("attributes", {})
    return json.loads((root / ".zattrs").read_text())
