"""The disk backend: arrays as TIFF or .npy, strings as text, bytes as binary files.

* ``.tif``/``.tiff``: plain, uncompressed TIFF written by tifffile, in ImageJ layout when the
  dtype allows (uint8, uint16, float32; bool), so Fiji and tifffile both open it. A private tag
  (:data:`HCSGRAPH_TIFF_TAG`) records the exact shape and dtype: ``bool`` is stored as uint8
  0/1 and comes back as ``bool``, and singleton axes come back.
* ``.npy``: numpy's format, never with pickled objects.
* ``str`` is written as UTF-8 text; files whose extension is in :data:`TEXT_EXTENSIONS`
  (``.csv``, ``.json``, ``.txt``, ...) load as ``str``, every other non-image file loads as ``bytes``.
* Any other object raises :class:`~hcsgraph.io.errors.UnsupportedDataError`: serialise it first.

Every write goes through :mod:`hcsgraph.io.atomic`: a temporary file in the same directory,
flushed and fsynced, then renamed onto the final name, so a reader never sees a half-written
file and a failed write leaves the old file as it was. A write that fails raises a
:class:`~hcsgraph.io.atomic.StorageWriteError` (an ``OSError`` with the system's errno) naming
the path and the backend, e.g. "cannot write the file: no space left on device".
"""

from __future__ import annotations

import errno
import io
import os
import posixpath
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

import numpy as np

from hcsgraph.config import ZarrConfig
from hcsgraph.io.atomic import remove_entry as _remove
from hcsgraph.io.atomic import temporary_name, write_error, write_temporary
from hcsgraph.io.base import StorageBackend
from hcsgraph.io.errors import (
    StorageDirectoryNotEmptyError,
    StorageError,
    StorageIsADirectoryError,
    StorageNotADirectoryError,
    StorageReadError,
    UnsupportedDataError,
)
from hcsgraph.io.location import redact
from hcsgraph.io.paths import PathLike, is_temporary, normalize, split_url
from hcsgraph.io.tiff import HCSGRAPH_TIFF_TAG, IMAGEJ_DTYPES, read_tiff, write_tiff

TIFF_EXTENSIONS = frozenset({".tif", ".tiff"})
NPY_EXTENSIONS = frozenset({".npy"})
PLAIN_IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp"})
TEXT_EXTENSIONS = frozenset({".csv", ".tsv", ".json", ".txt", ".md", ".yaml", ".yml", ".xml", ".html", ".log"})


def _extension(path: str) -> str:
    return posixpath.splitext(path)[1].lower()


class LocalTreeBackend(StorageBackend):
    """Operations shared by the backends that keep data in a local directory tree.

    Subclasses say which filesystem entries are files (:meth:`_is_leaf`) and which entries
    they do not show (:meth:`_hidden`).
    """

    def resolve(self, path: PathLike) -> str:
        """The local path of ``path``; a URL is refused (the ``"fsspec"`` store keeps data at URLs)."""
        if isinstance(path, str) and split_url(path) is not None:
            raise StorageError(
                f"the {self.name} backend keeps data in local directories; for URLs use the 'fsspec' "
                "backend (hcsgraph.io.fsspec_store)",
                path=redact(path),
                backend=self.name,
            )
        return super().resolve(path)

    def _fs(self, path: PathLike) -> str:
        return self.resolve(path)

    def _is_leaf(self, fs_path: str) -> bool:
        """Whether the filesystem entry is a file of this backend."""
        return os.path.isfile(fs_path)

    def _hidden(self, fs_path: str) -> bool:
        """Whether the entry is neither a file nor a directory of this backend."""
        return not os.path.exists(fs_path)

    # -- queries ---------------------------------------------------------------
    def exists(self, path: PathLike) -> bool:
        p = self._fs(path)
        return os.path.islink(p) or (os.path.exists(p) and not self._hidden(p))

    def is_file(self, path: PathLike) -> bool:
        return self._is_leaf(self._fs(path))

    def is_dir(self, path: PathLike) -> bool:
        p = self._fs(path)
        return os.path.isdir(p) and not self._is_leaf(p)

    def is_symlink(self, path: PathLike) -> bool:
        return os.path.islink(self._fs(path))

    def _scan(self, path: PathLike) -> list[tuple[str, bool]]:
        p = self._fs(path)
        if not self.is_dir(path):
            if self.exists(path):
                raise StorageNotADirectoryError("not a directory", path=path, backend=self.name)
            raise self._not_found(path, "no such directory")
        entries = []
        with os.scandir(p) as it:
            for entry in it:
                if is_temporary(entry.name):
                    continue
                full = os.path.join(p, entry.name)
                if self._is_leaf(full):
                    entries.append((entry.name, False))
                elif os.path.isdir(full):
                    entries.append((entry.name, True))
                elif entry.is_symlink() or not self._hidden(full):
                    entries.append((entry.name, False))
        return entries

    # -- writes ----------------------------------------------------------------
    @contextmanager
    def _writing(self, path: PathLike, fs_path: str | None = None) -> Iterator[None]:
        """Turn an ``OSError`` of the block into a StorageWriteError naming ``path`` and this backend."""
        try:
            yield
        except StorageError:
            raise
        except OSError as exc:
            target = fs_path if fs_path is not None else self._fs(path)
            raise write_error(exc, path, backend=self.name, filename=target, directory=os.path.dirname(target) or ".") from exc

    def _prepare_target(self, path: PathLike, overwrite: bool) -> str:
        """Check ``path`` may be written, create its parent, return its filesystem path."""
        p = self._fs(path)
        if os.path.isdir(p) and not self._is_leaf(p):
            raise StorageIsADirectoryError("a directory exists at this path", path=path, backend=self.name)
        if not overwrite and self.exists(path):
            raise self._exists_error(path)
        parent = os.path.dirname(p) or "."
        try:
            os.makedirs(parent, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise StorageNotADirectoryError(f"a parent of the path is a file: {exc}", path=path, backend=self.name) from exc
        return p

    def _publish(self, tmp: str, final: str, overwrite: bool, shown: Any) -> None:
        """Rename the finished temporary entry ``tmp`` onto ``final``; remove ``tmp`` if that fails."""
        try:
            self._place(tmp, final, overwrite, shown)
        finally:
            if os.path.lexists(tmp):
                _remove(tmp)

    def _place(self, src: str, final: str, overwrite: bool, shown: Any) -> None:
        """Rename ``src`` onto ``final`` atomically, never clobbering ``final`` without ``overwrite``."""
        src_is_tree = os.path.isdir(src) and not os.path.islink(src)
        final_is_tree = os.path.isdir(final) and not os.path.islink(final)
        if src_is_tree or (overwrite and final_is_tree):
            self._publish_dir(src, final, overwrite, shown)
        elif overwrite:
            os.replace(src, final)
        else:
            try:
                os.link(src, final, follow_symlinks=False)  # fails if final exists: no race
            except FileExistsError:
                raise self._exists_error(shown) from None
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                    raise
                if os.path.lexists(final):
                    raise self._exists_error(shown) from None
                os.rename(src, final)
            else:
                os.unlink(src)

    def _publish_dir(self, tmp: str, final: str, overwrite: bool, shown: Any) -> None:
        if not os.path.lexists(final):
            os.rename(tmp, final)
            return
        if not overwrite:
            raise self._exists_error(shown)
        if os.path.isdir(final) and not os.path.islink(final) and not self._is_leaf(final):
            raise StorageIsADirectoryError("a directory exists at this path", path=shown, backend=self.name)
        trash = temporary_name(final)
        os.rename(final, trash)
        try:
            os.rename(tmp, final)
        except BaseException:
            os.rename(trash, final)
            raise
        _remove(trash)

    def _write_file(self, path: PathLike, writer: Callable[[BinaryIO], object], overwrite: bool) -> str:
        """Write a file with ``writer`` through a synced temporary file (see :mod:`hcsgraph.io.atomic`)."""
        with self._writing(path):
            final = self._prepare_target(path, overwrite)
            tmp = write_temporary(final, writer, shown=path, backend=self.name)
            self._publish(tmp, final, overwrite, path)
        return normalize(path, self.name)

    # -- changes ---------------------------------------------------------------
    def ensure_directory(self, path: PathLike) -> str:
        p = self._fs(path)
        if self._is_leaf(p):
            raise StorageNotADirectoryError("a file exists at this path", path=path, backend=self.name)
        try:
            with self._writing(path, p):
                os.makedirs(p, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise StorageNotADirectoryError(f"cannot create the directory: {exc}", path=path, backend=self.name) from exc
        return normalize(path, self.name)

    def delete(self, path: PathLike, *, recursive: bool = False) -> None:
        p = self._fs(path)
        if not self.exists(path):
            raise self._not_found(path)
        if os.path.islink(p) or not os.path.isdir(p):
            os.unlink(p)
        elif self._is_leaf(p):
            shutil.rmtree(p)
        elif recursive:
            if self.root is not None and p == self.root:
                raise StorageIsADirectoryError("the store root cannot be deleted", path=path, backend=self.name)
            shutil.rmtree(p)
        else:
            try:
                os.rmdir(p)
            except OSError as exc:
                raise StorageDirectoryNotEmptyError("the directory is not empty; pass recursive=True", path=path, backend=self.name) from exc

    def _check_transfer(self, source: PathLike, destination: PathLike, overwrite: bool) -> tuple[str, str]:
        src = self._fs(source)
        if not self.exists(source):
            raise self._not_found(source)
        dst = self._prepare_target(destination, overwrite)
        if dst == src or dst.startswith(src.rstrip("/") + "/"):
            raise StorageNotADirectoryError("cannot copy or move a path into itself", path=destination, backend=self.name)
        return src, dst

    def copy(self, source: PathLike, destination: PathLike, *, overwrite: bool = False) -> str:
        with self._writing(destination):
            src, dst = self._check_transfer(source, destination, overwrite)
            tmp = temporary_name(dst)
            try:
                if os.path.isdir(src) and not os.path.islink(src):
                    shutil.copytree(src, tmp, symlinks=True)
                else:
                    shutil.copy2(src, tmp, follow_symlinks=False)
            except BaseException:
                _remove(tmp)
                raise
            self._publish(tmp, dst, overwrite, destination)
        return normalize(destination, self.name)

    def move(self, source: PathLike, destination: PathLike, *, overwrite: bool = False) -> str:
        """Rename within one filesystem (atomic); across filesystems copy, then remove the source."""
        with self._writing(destination):
            src, dst = self._check_transfer(source, destination, overwrite)
            try:
                self._place(src, dst, overwrite, destination)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                self.copy(source, destination, overwrite=overwrite)
                self.delete(source, recursive=True)
        return normalize(destination, self.name)

    def symlink(self, target: PathLike, link: PathLike, *, overwrite: bool = False) -> str:
        src = self._fs(target)
        if not self.exists(target):
            raise self._not_found(target, "the link target does not exist")
        with self._writing(link):
            final = self._prepare_target(link, overwrite)
            tmp = temporary_name(final)
            os.symlink(os.path.abspath(src), tmp, target_is_directory=os.path.isdir(src))
            self._publish(tmp, final, overwrite, link)
        return normalize(link, self.name)


def _as_array(data: Any, path: Any, backend: str) -> np.ndarray | None:
    """``data`` as a numpy array when it is array-like, else None."""
    if isinstance(data, np.ndarray):
        return data
    if isinstance(data, str | bytes | bytearray | memoryview) or not hasattr(data, "__array__"):
        return None
    try:
        return np.asarray(data)
    except Exception as exc:
        raise UnsupportedDataError(
            f"{type(data).__name__} cannot be turned into a numpy array ({exc}); move it to the host first",
            path=path,
            backend=backend,
        ) from exc


def file_encoder(data: Any, path: Any, ext: str, backend: str) -> Callable[[BinaryIO], None]:
    """The writer of ``data`` as a file with extension ``ext`` (see the module docstring for formats).

    Shared by every store that keeps files (this disk backend and the URL store), so that a path
    means the same bytes in each. Unsupported data raises UnsupportedDataError naming ``path``.
    """
    array = _as_array(data, path, backend)
    if array is not None:
        if array.dtype == object:
            raise UnsupportedDataError("object arrays cannot be written to disk (no pickles)", path=path, backend=backend)
        if ext in TIFF_EXTENSIONS:
            return lambda f: write_tiff(f, array)
        if ext in NPY_EXTENSIONS:
            return lambda f: np.save(f, array, allow_pickle=False)
        raise UnsupportedDataError(
            f"arrays are written as .tif, .tiff or .npy, not {ext or 'a name without extension'!r}",
            path=path,
            backend=backend,
        )
    if isinstance(data, str):
        if ext in TIFF_EXTENSIONS | NPY_EXTENSIONS:
            raise UnsupportedDataError(f"text cannot be written to a {ext} file", path=path, backend=backend)
        encoded = data.encode("utf-8")
        return lambda f: f.write(encoded)
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        return lambda f: f.write(raw)
    raise UnsupportedDataError(
        f"{type(data).__name__} cannot be written to disk: save an array, str or bytes "
        "(serialise other objects first, e.g. json.dumps or DataFrame.to_csv)",
        path=path,
        backend=backend,
    )


def encode_file(data: Any, path: Any, ext: str, backend: str) -> bytes:
    """The bytes :func:`file_encoder` writes for ``data``, in memory."""
    buffer = io.BytesIO()
    file_encoder(data, path, ext, backend)(buffer)
    return buffer.getvalue()


def decode_file(raw: bytes, ext: str, path: Any, backend: str) -> Any:
    """The data a file with extension ``ext`` holds: an array for images and ``.npy``, ``str`` for text
    extensions, else the bytes. A file that cannot be decoded raises StorageReadError naming ``path``."""
    try:
        if ext in TIFF_EXTENSIONS:
            return read_tiff(io.BytesIO(raw))
        if ext in NPY_EXTENSIONS:
            return np.load(io.BytesIO(raw), allow_pickle=False)
        if ext in PLAIN_IMAGE_EXTENSIONS:
            import imageio.v3 as iio

            return iio.imread(raw, extension=ext)
        if ext in TEXT_EXTENSIONS:
            return raw.decode("utf-8")
    except StorageError:
        raise
    except Exception as exc:
        raise StorageReadError(f"the file cannot be read as {ext}: {exc}", path=path, backend=backend) from exc
    return raw


class DiskStorageBackend(LocalTreeBackend):
    """Files in a local directory tree (see the module docstring for formats)."""

    name = "disk"

    def _encoder(self, data: Any, path: PathLike) -> Callable[[BinaryIO], None]:
        return file_encoder(data, path, _extension(self._fs(path)), self.name)

    def save(self, data: Any, path: PathLike, *, overwrite: bool = False, zarr_config: ZarrConfig | None = None) -> str:
        """Write ``data`` atomically; ``zarr_config`` is ignored."""
        writer = self._encoder(data, path)
        return self._write_file(path, writer, overwrite)

    def load(self, path: PathLike) -> Any:
        p = self._fs(path)
        if os.path.isdir(p):
            raise StorageIsADirectoryError("cannot load a directory", path=path, backend=self.name)
        try:
            with open(p, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            raise self._not_found(path, "no such file") from None
        return decode_file(raw, _extension(p), path, self.name)


__all__ = [
    "HCSGRAPH_TIFF_TAG",
    "decode_file",
    "encode_file",
    "file_encoder",
    "IMAGEJ_DTYPES",
    "DiskStorageBackend",
    "LocalTreeBackend",
    "read_tiff",
    "temporary_name",
    "write_tiff",
]
