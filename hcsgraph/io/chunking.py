"""The one chunk planner and compressor builder of every Zarr array hcsgraph writes.

Both the zarr storage backend (:mod:`hcsgraph.io.zarr`) and the OME-Zarr plate writer
(:mod:`hcsgraph.io.omezarr`) lay out their arrays with :func:`plan_chunks` and compress them with
:func:`compressors_for`, so the same shape, dtype and :class:`~hcsgraph.config.ZarrConfig` always
give the same chunks, shards and codecs.

The last two axes are the YX plane; the third from last is Z. ``ZarrConfig.chunk_strategy``:

* ADAPTIVE: one chunk per YX plane while a plane is at most ``max_chunk_bytes``. A larger plane is
  cut into square tiles whose edge is the largest power of two that keeps a tile within
  ``max_chunk_bytes`` (capped at the plane's size); a plane cut into ``shard_min_chunks`` tiles or
  more is one shard (Zarr v3 only). Every chunk or shard lies inside one plane.
* FIELD: one chunk per z-stack (the last three axes whole, leading axes 1).
* WELL: the whole array is one chunk.

Blosc always uses byte shuffle, on both Zarr formats and every dtype.

:func:`chunk_owner` says which planes of a TCZYX field array share a chunk (or shard) file: group
write tasks by ``(well, field) + chunk_owner(...)`` and give each group one writer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from hcsgraph.config import ZarrChunkStrategy, ZarrCompressor, ZarrConfig, coerce_enum

Layout = tuple[tuple[int, ...], tuple[int, ...] | None]
"""``(chunks, shards)``; ``shards`` is None when the array is not sharded."""

BLOSC_SHUFFLE = "shuffle"
"""The Blosc shuffle of every array (byte shuffle)."""


def tile_edge(itemsize: int, max_chunk_bytes: int, ndim: int = 2) -> int:
    """The largest power of two ``e`` with ``e**ndim * itemsize <= max_chunk_bytes`` (at least 1)."""
    edge = 1
    while (2 * edge) ** ndim * itemsize <= max_chunk_bytes:
        edge *= 2
    return edge


def plan_chunks(shape: tuple[int, ...], dtype: DTypeLike, config: ZarrConfig) -> Layout:
    """``(chunks, shards or None)`` of an array of ``shape`` and ``dtype`` under ``config`` (see module docs)."""
    if not shape:
        return (), None
    whole = tuple(max(1, int(d)) for d in shape)
    strategy = config.chunk_strategy
    if strategy is ZarrChunkStrategy.WELL:
        return whole, None
    if strategy is ZarrChunkStrategy.FIELD:
        stack = whole[-3:]
        return (1,) * (len(whole) - len(stack)) + stack, None
    itemsize = np.dtype(dtype).itemsize
    plane = whole[-2:]
    lead = (1,) * (len(whole) - len(plane))
    if math.prod(plane) * itemsize <= config.max_chunk_bytes:
        return lead + plane, None
    edge = tile_edge(itemsize, config.max_chunk_bytes, len(plane))
    tile = tuple(min(edge, d) for d in plane)
    counts = [-(-d // t) for d, t in zip(plane, tile, strict=True)]
    if config.zarr_format == 3 and math.prod(counts) >= config.shard_min_chunks:
        shard = tuple(n * t for n, t in zip(counts, tile, strict=True))
        return lead + tile, lead + shard
    return lead + tile, None


def compressors_for(config: ZarrConfig) -> Any:
    """The ``compressors`` argument of :func:`zarr.create_array` for ``config`` (None: uncompressed)."""
    level = config.compression_level
    if config.compressor is ZarrCompressor.NONE:
        return None
    if config.zarr_format == 2:
        import numcodecs

        if config.compressor is ZarrCompressor.LZ4:
            return numcodecs.Blosc(cname="lz4", clevel=level, shuffle=numcodecs.Blosc.SHUFFLE)
        return numcodecs.Zstd(level=level)
    from zarr.codecs import BloscCodec, ZstdCodec

    if config.compressor is ZarrCompressor.LZ4:
        return BloscCodec(cname="lz4", clevel=level, shuffle=BLOSC_SHUFFLE)
    return ZstdCodec(level=level)


def chunk_owner(strategy: ZarrChunkStrategy | str, t: int, c: int, z: int) -> tuple[int, ...]:
    """The key shared by every plane ``(t, c, z)`` of a field array that lies in the same chunk or shard.

    ADAPTIVE → ``(t, c, z)``, FIELD → ``(t, c)``, WELL → ``()``. Planes of one field with equal keys
    must be written by one writer (one :func:`hcsgraph.io.omezarr.write_planes` call); planes with
    different keys, or of different fields, may be written in parallel.
    """
    strategy = coerce_enum(ZarrChunkStrategy, strategy, "chunk_strategy")
    if strategy is ZarrChunkStrategy.WELL:
        return ()
    if strategy is ZarrChunkStrategy.FIELD:
        return (int(t), int(c))
    return (int(t), int(c), int(z))
