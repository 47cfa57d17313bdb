"""Read one image plane from a plate: a TIFF file, or a plane of an OME-Zarr array; local or at a URL.

An OME-Zarr plane reference is the array's path, ``#``, then 0-based indices of the axes before
Y and X in array order, e.g. ``/data/plate.zarr/A/1/0/0#t=0,c=1,z=0`` or
``s3://bucket/plate.zarr/A/1/0/0#t=0,c=1,z=0``. URLs are read through fsspec with the
``storage_options`` given (see :mod:`hcsgraph.io.location`).
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import tifffile

from hcsgraph.io import location
from hcsgraph.io.errors import StorageError

TIFF_SUFFIXES = (".tif", ".tiff")


class PlateReadError(Exception):
    """An image plane could not be read; the message names the file and the reason."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = str(path)
        self.reason = str(reason)

    def __str__(self) -> str:
        return f"cannot read image {self.path}: {self.reason}"

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


def plane_ref(array_path: str, **indices: int) -> str:
    """A plane reference for :func:`read_plane`: ``plane_ref('/p.zarr/A/1/0/0', t=0, c=1, z=0)``."""
    return f"{array_path}#" + ",".join(f"{k}={int(v)}" for k, v in indices.items())


def parse_plane_ref(ref: str) -> tuple[str, tuple[int, ...]] | None:
    """Split a plane reference into (array path, leading indices); None for a plain file path."""
    if "#" not in ref:
        return None
    array_path, _, spec = ref.rpartition("#")
    try:
        indices = tuple(int(part.split("=", 1)[1]) for part in spec.split(",") if part)
    except (IndexError, ValueError):
        return None
    return array_path, indices


def _open_zarr_array(array_path: str, storage_options: Mapping[str, Any] | None = None):
    import zarr

    if location.is_url(array_path):
        return _open_remote_array(array_path, location.storage_options(storage_options))
    try:
        return zarr.open_array(array_path, mode="r")
    except FileNotFoundError as exc:
        raise PlateReadError(array_path, "no Zarr array at this path") from exc
    except Exception as exc:  # noqa: BLE001 - any store/metadata failure is reported with the path
        raise PlateReadError(array_path, f"{type(exc).__name__}: {exc}") from exc


_REMOTE_ARRAYS: OrderedDict[tuple[str, str], Any] = OrderedDict()
_REMOTE_ARRAYS_MAX = 256
_REMOTE_LOCK = threading.Lock()


def _open_remote_array(url: str, options: Mapping[str, Any] | None):
    """A read-only Zarr array at a URL, opened once per process (its metadata is read once)."""
    import zarr

    from hcsgraph.io.omezarr import zarr_store

    key = (url, location.storage_options(options).token() if options else "")
    with _REMOTE_LOCK:
        array = _REMOTE_ARRAYS.get(key)
        if array is not None:
            _REMOTE_ARRAYS.move_to_end(key)
            return array
    try:
        array = zarr.open_array(store=zarr_store(url, options, read_only=True), mode="r")
    except Exception as exc:  # noqa: BLE001 - any store/metadata failure is reported with the URL, no secret
        raise _remote_failure(url, exc, options, "no Zarr array at this path") from None
    with _REMOTE_LOCK:
        _REMOTE_ARRAYS[key] = array
        while len(_REMOTE_ARRAYS) > _REMOTE_ARRAYS_MAX:
            _REMOTE_ARRAYS.popitem(last=False)
    return array


def _remote_failure(url: str, exc: BaseException, options: Mapping[str, Any] | None,
                    missing: str = "file not found") -> PlateReadError:
    """A failure to read ``url`` as a PlateReadError naming it (credentials never shown); ``missing``:
    the reason when nothing is there."""
    shown = location.redact(url)
    if isinstance(exc, PlateReadError):
        return exc
    if isinstance(exc, FileNotFoundError) or type(exc).__name__ in ("ArrayNotFoundError", "GroupNotFoundError"):
        return PlateReadError(shown, missing)
    if isinstance(exc, StorageError):
        return PlateReadError(shown, location.scrub(exc.reason, options))
    return PlateReadError(shown, location.scrub(f"{type(exc).__name__}: {exc}", options))


def _fetch(path: str, options: Mapping[str, Any] | None) -> bytes:
    """The whole object at a URL (one GET); a missing or empty one raises :class:`PlateReadError`."""
    try:
        raw = location.read_bytes(path, options)
    except Exception as exc:  # noqa: BLE001
        raise _remote_failure(path, exc, options) from None
    if not raw:
        raise PlateReadError(location.redact(path), "the file is empty (0 bytes)")
    return raw


def _describe(shape: tuple[int, ...], dtype: np.dtype) -> str:
    return f"{'x'.join(str(int(n)) for n in shape)} {np.dtype(dtype).name}"


def check_plane(path: str, shape: tuple[int, ...], dtype: np.dtype, out: np.ndarray | None,
                casting: str = "safe") -> None:
    """Raise :class:`PlateReadError` naming ``path`` when a plane of ``shape``/``dtype`` does not fit ``out``.

    It fits when the shapes are equal and ``dtype`` casts to ``out.dtype`` under ``casting`` (``"safe"``:
    without loss, e.g. uint8 into uint16; ``"no"``: only the same dtype).
    """
    if out is None:
        return
    if tuple(shape) != tuple(out.shape) or not np.can_cast(np.dtype(dtype), out.dtype, casting=casting):
        raise PlateReadError(path, f"the image is {_describe(shape, dtype)}, but the plate's planes are "
                                   f"{_describe(out.shape, out.dtype)}; the file does not match the expected plane")


def _check_size(path: str) -> int:
    """The file's size; an empty or missing file raises :class:`PlateReadError`."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError as exc:
        raise PlateReadError(path, "file not found") from exc
    except OSError as exc:
        raise PlateReadError(path, exc.strerror or str(exc)) from exc
    if size == 0:
        raise PlateReadError(path, "the file is empty (0 bytes)")
    return size


def _tiff_page(tif: tifffile.TiffFile, path: str, size: int):
    """The first page of an open TIFF, its 2D shape and dtype; checks that its pixel data lies in the file."""
    if not tif.pages:
        raise PlateReadError(path, "the TIFF holds no image")
    page = tif.pages[0]
    ends = [int(o) + int(n) for o, n in zip(page.dataoffsets, page.databytecounts, strict=False) if n]
    if ends and max(ends) > size:
        raise PlateReadError(path, f"the file is truncated: its pixel data ends at byte {max(ends)}, "
                                   f"the file has {size} bytes")
    shape = tuple(int(s) for s in page.shape if s != 1) or tuple(int(s) for s in page.shape)
    if len(shape) != 2:
        raise PlateReadError(path, f"expected one 2D plane, found shape {tuple(page.shape)}")
    return page, shape, np.dtype(page.dtype)


def _tiff_error(path: str, exc: Exception) -> PlateReadError:
    return PlateReadError(path, f"not a readable TIFF, truncated or corrupt ({type(exc).__name__}: {exc})")


def _read_tiff(path: str, out: np.ndarray | None = None, casting: str = "safe", raw: bytes | None = None) -> np.ndarray:
    """A TIFF plane from the file ``path``, or from ``raw`` (its bytes, read from a URL)."""
    size = _check_size(path) if raw is None else len(raw)
    try:
        with tifffile.TiffFile(path if raw is None else io.BytesIO(raw)) as tif:
            page, shape, dtype = _tiff_page(tif, path, size)
            check_plane(path, shape, dtype, out, casting)
            if out is not None and tuple(page.shape) == out.shape and dtype == out.dtype:
                page.asarray(out=out)
                return out
            data = page.asarray().reshape(shape)
    except PlateReadError:
        raise
    except FileNotFoundError as exc:
        raise PlateReadError(path, "file not found") from exc
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt files raise many types
        raise _tiff_error(path, exc) from exc
    return _fill(data, out)


def _fill(data: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """``data`` copied into ``out`` (cast) and ``out`` returned; ``data`` itself without ``out``."""
    if out is None:
        return data
    out[...] = data
    return out


def _decoded(path: str, data: np.ndarray, out: np.ndarray | None, casting: str) -> np.ndarray:
    """A plane another decoder gave: refused unless 2D and fitting ``out`` (see :func:`check_plane`)."""
    if data.ndim != 2:
        raise PlateReadError(path, f"expected one 2D plane, found shape {data.shape}")
    check_plane(path, data.shape, data.dtype, out, casting)
    return _fill(data, out)


def read_plane(path: str | os.PathLike, out: np.ndarray | None = None, *, casting: str = "safe",
               storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """One 2D plane: a TIFF file or an OME-Zarr plane reference, with its stored dtype when ``out`` is None.

    ``out``: the 2D array the plane is expected to fill; the plane is read into it and it is returned.
    A plane whose shape differs from ``out``, or whose dtype does not cast to ``out.dtype`` under
    ``casting`` (default ``"safe"``: without loss; ``"no"``: the same dtype only), raises
    :class:`PlateReadError` naming the file, and ``out`` is left untouched. Missing, empty, truncated
    and corrupt files raise it too.

    ``path`` may be a URL (``s3://...``, a plane reference into a Zarr array at a URL included), read
    through fsspec with ``storage_options`` (``PlateIndex.storage_options``; None: fsspec's default
    credentials): a file is one whole-object ``GET``, a Zarr plane its chunk(s) (the array's metadata
    is read once per process). Errors name the URL, never a credential.
    """
    path = os.fspath(path)
    ref = parse_plane_ref(path)
    if ref is None and location.is_url(path):
        return _read_remote_file(path, out, casting, storage_options)
    if ref is not None:
        array_path, indices = ref
        array = _open_zarr_array(array_path, storage_options)
        if len(indices) != array.ndim - 2:
            raise PlateReadError(path, f"expected {array.ndim - 2} indices for an array of shape {array.shape}")
        check_plane(path, tuple(array.shape[-2:]), array.dtype, out, casting)
        try:
            data = np.asarray(array[indices])
        except Exception as exc:  # noqa: BLE001
            if location.is_url(path):
                raise _remote_failure(path, exc, storage_options) from None
            raise PlateReadError(path, f"{type(exc).__name__}: {exc}") from exc
    elif path.lower().endswith(TIFF_SUFFIXES):
        return _read_tiff(path, out, casting)
    else:
        _check_size(path)
        try:
            import imageio.v3 as iio
        except ImportError as exc:  # pragma: no cover - imageio comes with scikit-image
            raise PlateReadError(path, "only TIFF files and OME-Zarr planes can be read") from exc
        try:
            data = np.asarray(iio.imread(path))
        except Exception as exc:  # noqa: BLE001
            raise PlateReadError(path, f"{type(exc).__name__}: {exc}") from exc
        return _decoded(path, data, out, casting)
    return _fill(data, out)


def _read_remote_file(path: str, out: np.ndarray | None, casting: str,
                      options: Mapping[str, Any] | None) -> np.ndarray:
    """A plane from an image file at a URL: one whole-object GET, decoded in memory."""
    raw = _fetch(path, options)
    shown = location.redact(path)
    if path.lower().endswith(TIFF_SUFFIXES):
        return _read_tiff(shown, out, casting, raw=raw)
    try:
        import imageio.v3 as iio

        data = np.asarray(iio.imread(raw, extension=os.path.splitext(path)[1].lower() or None))
    except Exception as exc:  # noqa: BLE001
        raise PlateReadError(shown, f"{type(exc).__name__}: {exc}") from exc
    return _decoded(shown, data, out, casting)


REMOTE_HEADER_BLOCK = 256 * 1024
"""Bytes fetched per ranged read when :func:`plane_info` reads a TIFF header at a URL."""


def _remote_tiff_info(path: str, options: Mapping[str, Any] | None,
                      size: int | None = None) -> tuple[tuple[int, int], np.dtype]:
    """Shape and dtype from the header of a TIFF at a URL: ranged reads of the header (and its size,
    unless ``size`` is known already, e.g. from the plate's listing)."""
    shown = location.redact(path)
    try:
        if size is None:
            found = location.info(path, options)
            if found is None:
                raise PlateReadError(shown, "file not found")
            size = int(found["size"])
        if size == 0:
            raise PlateReadError(shown, "the file is empty (0 bytes)")
        handle = _RangedFile(path, size, options)
        with tifffile.TiffFile(handle, name=os.path.basename(path)) as tif:
            _, shape, dtype = _tiff_page(tif, shown, size)
    except PlateReadError:
        raise
    except (FileNotFoundError, StorageError) as exc:
        raise _remote_failure(path, exc, options) from None
    except Exception as exc:  # noqa: BLE001
        if _class_names(exc) & _STORE_FAILURES:
            raise _remote_failure(path, location._error(exc, path, options, "cannot read the file"), options) from None
        raise _tiff_error(shown, exc) from exc
    return (shape[0], shape[1]), dtype


class _RangedFile(io.RawIOBase):
    """A read-only, seekable view of the file at a URL of known size: blocks of
    :data:`REMOTE_HEADER_BLOCK` bytes fetched by ranged reads as they are touched, each once."""

    def __init__(self, url: str, size: int, options: Mapping[str, Any] | None) -> None:
        super().__init__()
        self.url, self.size, self.options, self.position = url, size, options, 0
        self.blocks: dict[int, bytes] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def _block(self, number: int) -> bytes:
        if number not in self.blocks:
            start = number * REMOTE_HEADER_BLOCK
            end = min(start + REMOTE_HEADER_BLOCK, self.size)
            self.blocks[number] = location.read_bytes(self.url, self.options, start=start, end=end)
        return self.blocks[number]

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self.position + n)
        parts = []
        while self.position < end:
            number, offset = divmod(self.position, REMOTE_HEADER_BLOCK)
            block = self._block(number)[offset: offset + end - self.position]
            if not block:
                break
            parts.append(block)
            self.position += len(block)
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)


_STORE_FAILURES = {"ClientError", "BotoCoreError", "HTTPClientError", "ClientConnectorError", "FSTimeoutError",
                   "ServerTimeoutError", "TimeoutError", "ConnectionError", "ReadTimeoutError"}


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def plane_info(path: str, storage_options: Mapping[str, Any] | None = None, *,
               size: int | None = None) -> tuple[tuple[int, int], np.dtype]:
    """((Y, X), dtype) of a plane from the TIFF header or the array metadata (pixels are read otherwise).

    Missing, empty, truncated and corrupt files raise :class:`PlateReadError` naming the file. At a URL a
    TIFF header costs one ranged read (:data:`REMOTE_HEADER_BLOCK` bytes; more when the header lies
    further in), plus one request for the file's size unless ``size`` gives it; never the whole file.
    """
    ref = parse_plane_ref(path)
    if ref is not None:
        array = _open_zarr_array(ref[0], storage_options)
        return (int(array.shape[-2]), int(array.shape[-1])), np.dtype(array.dtype)
    if location.is_url(path):
        if path.lower().endswith(TIFF_SUFFIXES):
            return _remote_tiff_info(path, storage_options, size)
        data = read_plane(path, storage_options=storage_options)
        return (int(data.shape[0]), int(data.shape[1])), data.dtype
    if path.lower().endswith(TIFF_SUFFIXES):
        size = _check_size(path)
        try:
            with tifffile.TiffFile(path) as tif:
                _, shape, dtype = _tiff_page(tif, path, size)
        except PlateReadError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _tiff_error(path, exc) from exc
        return (shape[0], shape[1]), dtype
    data = read_plane(path)
    return (int(data.shape[0]), int(data.shape[1])), data.dtype
