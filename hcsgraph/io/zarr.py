"""The zarr backend: every saved VFS path is its own Zarr array (zarr-python 3).

``save(image, "/out/A01/img_1.tif")`` makes ``/out/A01/img_1.tif`` a directory holding the
array's metadata (``zarr.json``, or ``.zarray`` for Zarr format 2) and its chunks, so a path
means the same as in the memory and disk backends. In listings such a directory is a file;
a directory without array metadata is a directory; other plain files are not shown.

Compression and chunking follow :class:`~hcsgraph.config.ZarrConfig` through
:mod:`hcsgraph.io.chunking`, exactly as in OME-Zarr plates:

* ``LZ4`` → Blosc lz4 with byte shuffle at ``compression_level``; ``ZSTD`` → Zstandard at
  ``compression_level``; ``NONE`` → no compressor;
* ``ADAPTIVE`` → one chunk per YX plane while the plane fits in ``max_chunk_bytes``, square
  power-of-two YX tiles above that (a plane cut into ``shard_min_chunks`` tiles or more is one
  shard); ``FIELD`` → one chunk per Z-stack (the last three axes); ``WELL`` → the whole array;
* the Zarr format follows ``ome_zarr_version`` (0.5 → format 3, 0.4 → format 2).

``str`` and ``bytes`` are stored as 1-D uint8 arrays with an attribute saying which, and load back
as they were. Every array is written into a temporary sibling directory and renamed into place,
so a reader never sees half an array. :meth:`ZarrStorageBackend.save_batch` writes all arrays
concurrently in one event loop; arrays of one layout share a metadata document built once, each
array's metadata is written once, and nothing is rescanned.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr
import zarr.api.asynchronous as zarr_async
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore, StorePath

from hcsgraph.config import ZarrConfig
from hcsgraph.io.chunking import compressors_for, plan_chunks
from hcsgraph.io.disk import LocalTreeBackend, _as_array, _remove, temporary_name
from hcsgraph.io.errors import StorageError, StorageIsADirectoryError, StorageReadError, UnsupportedDataError
from hcsgraph.io.paths import PathLike, normalize

KIND_ATTRIBUTE = "hcsgraph_kind"
"""Array attribute marking an array that holds ``"str"`` or ``"bytes"``."""


def is_array_dir(fs_path: str) -> bool:
    """Whether the directory holds a Zarr array's metadata."""
    meta = os.path.join(fs_path, "zarr.json")
    if os.path.isfile(meta):
        try:
            with open(meta, "rb") as handle:
                return json.load(handle).get("node_type") == "array"
        except (OSError, ValueError):
            return False
    return os.path.isfile(os.path.join(fs_path, ".zarray"))


class ZarrStorageBackend(LocalTreeBackend):
    """One Zarr array per VFS path, in a local directory tree."""

    name = "zarr"

    def __init__(self, root: PathLike | None = None, config: ZarrConfig | None = None, max_concurrency: int = 32) -> None:
        super().__init__(root)
        self.config = config or ZarrConfig()
        self.max_concurrency = max_concurrency

    def _is_leaf(self, fs_path: str) -> bool:
        return os.path.isdir(fs_path) and is_array_dir(fs_path)

    def _hidden(self, fs_path: str) -> bool:
        return not os.path.isdir(fs_path)

    # -- encoding ----------------------------------------------------------------
    def _encode(self, data: Any, path: PathLike) -> tuple[np.ndarray, dict[str, Any]]:
        if isinstance(data, str):
            return np.frombuffer(data.encode("utf-8"), dtype=np.uint8), {KIND_ATTRIBUTE: "str"}
        if isinstance(data, bytes | bytearray | memoryview):
            return np.frombuffer(bytes(data), dtype=np.uint8), {KIND_ATTRIBUTE: "bytes"}
        array = _as_array(data, path, self.name)
        if array is None or array.dtype == object or array.dtype.kind in "OUSV":
            kind = type(data).__name__ if array is None else f"{array.dtype} array"
            raise UnsupportedDataError(
                f"{kind} cannot be stored as a Zarr array: save a numeric or bool array, str or bytes",
                path=path,
                backend=self.name,
            )
        return array, {}

    @staticmethod
    def _decode(array: Any, attributes: dict[str, Any]) -> Any:
        kind = attributes.get(KIND_ATTRIBUTE)
        array = np.asarray(array)
        if kind == "str":
            return array.tobytes().decode("utf-8")
        if kind == "bytes":
            return array.tobytes()
        return array

    # -- data ----------------------------------------------------------------------
    def save(self, data: Any, path: PathLike, *, overwrite: bool = False, zarr_config: ZarrConfig | None = None) -> str:
        """Write ``data`` as the Zarr array at ``path``."""
        return self.save_batch([data], [path], overwrite=overwrite, zarr_config=zarr_config)[0]

    def save_batch(
        self,
        data: Sequence[Any],
        file_paths: Sequence[PathLike],
        *,
        overwrite: bool = False,
        zarr_config: ZarrConfig | None = None,
    ) -> list[str]:
        """Write one Zarr array per path, concurrently; nothing appears until every array is complete.

        Cost is linear in the number of arrays: each array's metadata is written once into
        its own temporary directory, then every directory is renamed into place.
        """
        config = zarr_config or self.config
        self._check_batch(data, file_paths, overwrite)
        encoded = [self._encode(d, p) for d, p in zip(data, file_paths, strict=True)]
        compressors = compressors_for(config)
        jobs = []
        parents: set[str] = set()
        for (array, attributes), path in zip(encoded, file_paths, strict=True):
            final = self._fs(path)
            if os.path.dirname(final) not in parents:
                self._prepare_target(path, overwrite)
                parents.add(os.path.dirname(final))
            elif os.path.isdir(final) and not self._is_leaf(final):
                raise StorageIsADirectoryError("a directory exists at this path", path=path, backend=self.name)
            chunks, shards = plan_chunks(array.shape, array.dtype, config)
            jobs.append((path, final, temporary_name(final), array, attributes, chunks, shards))
        try:
            sync(self._write_all(jobs, compressors, config.zarr_format))
            for path, final, tmp, *_ in jobs:
                self._publish(tmp, final, overwrite, path)
        finally:
            for _path, _final, tmp, *_ in jobs:
                if os.path.lexists(tmp):
                    _remove(tmp)
        return [normalize(p, self.name) for p in file_paths]

    async def _write_all(self, jobs: list[tuple], compressors: Any, zarr_format: int) -> None:
        """Write every job's array; arrays with the same layout share one metadata template."""
        limit = asyncio.Semaphore(self.max_concurrency)
        templates: dict[tuple, asyncio.Future] = {}

        async def template(path, tmp, array, attributes, chunks, shards) -> tuple[Any, dict[str, Any]]:
            created = await zarr_async.create_array(
                LocalStore(tmp),
                shape=array.shape,
                dtype=array.dtype,
                chunks=chunks,
                shards=shards,
                compressors=compressors,
                fill_value=False if array.dtype == bool else 0,
                zarr_format=zarr_format,
                attributes=attributes,
                config={"write_empty_chunks": True},
            )
            return created, created.metadata.to_buffer_dict(default_buffer_prototype())

        async def write(path, _final, tmp, array, attributes, chunks, shards) -> None:
            async with limit:
                try:
                    signature = (array.shape, array.dtype.str, chunks, shards, json.dumps(attributes, sort_keys=True))
                    if signature not in templates:
                        templates[signature] = asyncio.ensure_future(template(path, tmp, array, attributes, chunks, shards))
                        target, _ = await templates[signature]
                    else:
                        first, documents = await templates[signature]
                        store = LocalStore(tmp)
                        for key, document in documents.items():
                            await store.set(key, document)
                        target = zarr.AsyncArray(metadata=first.metadata, store_path=StorePath(store), config=first.config)
                    await target.setitem(..., array)
                except StorageError:
                    raise
                except Exception as exc:
                    raise StorageError(f"writing the Zarr array failed: {exc}", path=path, backend=self.name) from exc

        results = await asyncio.gather(*(write(*job) for job in jobs), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def load(self, path: PathLike) -> Any:
        """The array at ``path`` (exact dtype and shape), or the ``str``/``bytes`` stored there."""
        return self.load_batch([path])[0]

    def load_batch(self, file_paths: Sequence[PathLike]) -> list[Any]:
        """Read the arrays at ``file_paths`` concurrently, in order."""
        stores = []
        for path in file_paths:
            p = self._fs(path)
            if not self._is_leaf(p):
                if os.path.isdir(p):
                    raise StorageIsADirectoryError("the directory holds no Zarr array", path=path, backend=self.name)
                raise self._not_found(path, "no such Zarr array")
            stores.append((path, p))
        return sync(self._read_all(stores))

    async def _read_all(self, stores: list[tuple[PathLike, str]]) -> list[Any]:
        limit = asyncio.Semaphore(self.max_concurrency)

        async def read(path: PathLike, fs_path: str) -> Any:
            async with limit:
                try:
                    array = await zarr_async.open_array(store=LocalStore(fs_path, read_only=True), mode="r")
                    values = await array.getitem(...)
                    return self._decode(values, dict(array.attrs))
                except Exception as exc:
                    raise StorageReadError(f"reading the Zarr array failed: {exc}", path=path, backend=self.name) from exc

        return list(await asyncio.gather(*(read(path, p) for path, p in stores)))

    def open_array(self, path: PathLike) -> zarr.Array:
        """The stored array itself (read-only), e.g. to inspect its codecs and chunks."""
        p = self._fs(path)
        if not self._is_leaf(p):
            raise self._not_found(path, "no such Zarr array")
        return zarr.open_array(store=LocalStore(p, read_only=True), mode="r")
