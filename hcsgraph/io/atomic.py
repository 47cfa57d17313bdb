"""Atomic file writes: the one place where hcsgraph writes a file it must never leave half-written.

Every writer here puts the data in a temporary sibling of the destination (named with
:data:`~hcsgraph.io.paths.TEMP_PREFIX`, so listings skip it), flushes and fsyncs it, then renames
it onto the destination with :func:`os.replace`. A reader sees the old file or the new one,
never a part of one. On any failure the temporary file is removed and the destination is left as
it was; an :class:`OSError` becomes a :class:`StorageWriteError` that names the destination and
keeps the errno (``"no space left on device"`` for ``ENOSPC``). Other exceptions are re-raised
unchanged, with a note naming the destination. New files get the mode ``0o666 & ~umask``, like
``open(path, "w")``; missing parent directories are created (``0o777 & ~umask``).
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, BinaryIO, cast

from hcsgraph.io.errors import StorageError
from hcsgraph.io.paths import TEMP_PREFIX

PathLike = str | os.PathLike[str]
Writer = Callable[[BinaryIO], object]

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
_NAME_BYTES = 150  # room in a 255-byte file name for the prefix and the random suffix
_SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")  # numpy's tofile: a short write without errno
_REASONS = {errno.ENOSPC: "no space left on device", getattr(errno, "EDQUOT", -1): "disk quota exceeded"}
_KINDS: tuple[type[OSError], ...] = (
    PermissionError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    InterruptedError,
    TimeoutError,
)


class StorageWriteError(StorageError, OSError):
    """A file could not be written; ``errno`` is the system's, ``filename`` the file on disk.

    :func:`write_error` returns a subclass that is also the builtin kind of the original
    error (``PermissionError``, ``FileNotFoundError``, ...), so ``except`` clauses keep working.
    """

    kind: type[OSError] = OSError

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.kind, self.reason, self.path, self.backend, self.errno, self.strerror, self.filename))


_CLASSES: dict[type[OSError], type[StorageWriteError]] = {OSError: StorageWriteError}


def _error_class(kind: type[OSError]) -> type[StorageWriteError]:
    if kind not in _CLASSES:
        made = type(f"StorageWrite{kind.__name__}", (StorageWriteError, kind), {"kind": kind, "__module__": __name__})
        _CLASSES.setdefault(kind, made)
    return _CLASSES[kind]


def _rebuild(kind: type[OSError], reason: str, path: Any, backend: Any, code: int | None, strerror: str | None, filename: Any) -> StorageWriteError:
    error = _error_class(kind)(reason, path=path, backend=backend)
    error.errno, error.strerror, error.filename = code, strerror, filename
    return error


def _errno(exc: OSError, directory: str | None) -> int | None:
    """``exc.errno``; ENOSPC for a tree copy that hit it, or for numpy's errno-less short write when
    the filesystem has no room left for it."""
    if exc.errno is not None:
        return exc.errno
    if isinstance(exc, shutil.Error) and f"[Errno {errno.ENOSPC}]" in str(exc):
        return errno.ENOSPC
    if directory is None:
        return None
    match = _SHORT_WRITE.search(str(exc))
    if match is None:
        return None
    try:
        stats = os.statvfs(directory)
    except (OSError, AttributeError):
        return None
    missing = int(match.group(1)) - int(match.group(2))
    return errno.ENOSPC if stats.f_bavail * stats.f_frsize < missing else None


def write_error(
    exc: OSError, path: Any, *, backend: str | None = None, filename: PathLike | None = None, directory: str | None = None
) -> StorageError:
    """``exc`` as a :class:`StorageWriteError` naming ``path`` (a StorageError is returned as it is).

    ``filename`` is the file on disk (default ``path``); ``directory``, where it was written, lets
    numpy's errno-less short writes be recognised as ``ENOSPC``.
    """
    if isinstance(exc, StorageError):
        return exc
    code = _errno(exc, directory)
    reason = _REASONS.get(code) if code is not None else None
    if reason is None:
        reason = exc.strerror or str(exc) or type(exc).__name__
        if code is None and _SHORT_WRITE.search(reason):
            reason = f"short write ({reason})"
    kind = next((k for k in _KINDS if isinstance(exc, k)), OSError)
    error = _error_class(kind)(f"cannot write the file: {reason}", path=path, backend=backend)
    error.errno, error.strerror = code, reason
    error.filename = os.fspath(filename) if filename is not None else error.path
    return error


def temporary_name(final: str) -> str:
    """A unique temporary sibling of ``final``; listings skip such names."""
    head, tail = os.path.split(final)
    tail = tail.encode("utf-8", "surrogateescape")[:_NAME_BYTES].decode("utf-8", "ignore")
    return os.path.join(head, f"{TEMP_PREFIX}{tail}.{uuid.uuid4().hex[:12]}")


def _create_temporary(final: str) -> tuple[int, str]:
    """Create a new temporary sibling of ``final`` (mode ``0o666 & ~umask``); return its fd and name."""
    while True:
        tmp = temporary_name(final)
        try:
            return os.open(tmp, _CREATE, 0o666), tmp
        except FileExistsError:
            continue


def remove_entry(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(FileNotFoundError):
            os.unlink(path)


def _make_parent(final: str) -> None:
    parent = os.path.dirname(final)
    if parent:
        os.makedirs(parent, exist_ok=True)


class _DirectWriter:
    """A seekable binary output that writes through Python's I/O, buffering at most 64 KiB.

    ``fileno()`` is refused so that numpy (``tofile``, ``np.save``) and tifffile fall back to
    :meth:`write`: their C-level writes report a full disk as "N requested and M written",
    without errno. Nothing is deferred to ``close``: :meth:`flush` raises any error.
    """

    _BUFFER = 1 << 16

    def __init__(self, raw: io.FileIO, name: str) -> None:
        self._raw = raw
        self._pending = bytearray()
        self.name = name
        self.mode = "wb"

    def write(self, data: Any) -> int:
        view = memoryview(data)
        view = (view if view.c_contiguous else memoryview(view.tobytes())).cast("B")
        size = view.nbytes
        if len(self._pending) + size > self._BUFFER:
            self.flush()
        if size > self._BUFFER:
            self._write_all(view)
        else:
            self._pending += view
        return size

    def _write_all(self, view: memoryview) -> None:
        while view.nbytes:
            done = self._raw.write(view)
            if not done:
                raise OSError(errno.EIO, "the file accepted no bytes")
            view = view[done:]

    def flush(self) -> None:
        if self._pending:
            data = bytes(self._pending)
            self._pending.clear()
            self._write_all(memoryview(data))

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self.flush()
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell() + len(self._pending)

    def truncate(self, size: int | None = None) -> int:
        self.flush()
        return self._raw.truncate(size)

    def fileno(self) -> int:
        raise io.UnsupportedOperation("writes go through Python I/O so that errors keep their errno")

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self._raw.closed


def _fail(exc: BaseException, tmp: str, shown: Any, final: str, backend: str | None) -> BaseException:
    """Remove ``tmp``; return the exception to raise for ``exc``."""
    error: BaseException = exc
    if isinstance(exc, OSError):
        error = write_error(exc, shown, backend=backend, filename=final, directory=os.path.dirname(tmp) or ".")
    elif isinstance(exc, Exception):
        exc.add_note(f"while writing {os.fspath(shown)!r}; the file was left as it was")
    remove_entry(tmp)
    return error


def write_temporary(
    final: str, writer: Writer, *, fsync: bool = True, shown: Any = None, backend: str | None = None
) -> str:
    """Write a complete temporary sibling of ``final`` with ``writer`` and return its name.

    ``writer`` gets a seekable binary file. The file is flushed and (with ``fsync``) synced;
    the caller renames it into place, or removes it. On failure nothing is left and the error
    names ``shown`` (default ``final``) and ``backend``.
    """
    shown = final if shown is None else shown
    tmp = ""
    try:
        fd, tmp = _create_temporary(final)
        with io.FileIO(fd, "wb", closefd=True) as raw:
            out = _DirectWriter(raw, tmp)
            writer(cast(BinaryIO, out))
            out.flush()
            if fsync:
                os.fsync(fd)
    except BaseException as exc:
        if not tmp:
            if isinstance(exc, OSError):
                raise write_error(exc, shown, backend=backend, filename=final) from exc
            raise
        error = _fail(exc, tmp, shown, final, backend)
        if error is exc:
            raise
        raise error from exc
    return tmp


def _replace(tmp: str, final: str) -> None:
    try:
        os.replace(tmp, final)
    except BaseException as exc:
        error = _fail(exc, tmp, final, final, None)
        if error is exc:
            raise
        raise error from exc


def write_atomic(path: PathLike, writer: Writer, *, fsync: bool = True) -> None:
    """Write ``path`` atomically with ``writer``, which gets a seekable binary file."""
    final = os.fspath(path)
    try:
        _make_parent(final)
    except OSError as exc:
        raise write_error(exc, final) from exc
    _replace(write_temporary(final, writer, fsync=fsync), final)


def write_bytes_atomic(path: PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically."""
    write_atomic(path, lambda handle: handle.write(data), fsync=fsync)


def write_text_atomic(path: PathLike, text: str, encoding: str = "utf-8", *, fsync: bool = True) -> None:
    """Write ``text`` to ``path`` atomically, with no newline translation."""
    write_bytes_atomic(path, text.encode(encoding), fsync=fsync)


def write_json_atomic(path: PathLike, payload: Any, *, sort_keys: bool = True, fsync: bool = True) -> None:
    """Write ``payload`` as JSON (indent 2, keys sorted, ``str()`` for other objects) atomically."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=sort_keys, default=str), fsync=fsync)


@contextmanager
def atomic_path(path: PathLike, *, fsync: bool = True) -> Iterator[str]:
    """Yield a temporary file name next to ``path`` for a writer that needs a name.

    The file exists, empty, with the final mode. When the block ends it is synced and renamed
    onto ``path``; when the block raises, it is removed and the error names ``path``.
    """
    final = os.fspath(path)
    try:
        _make_parent(final)
        fd, tmp = _create_temporary(final)
        os.close(fd)
    except OSError as exc:
        raise write_error(exc, final) from exc
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except BaseException as exc:
        error = _fail(exc, tmp, final, final, None)
        if error is exc:
            raise
        raise error from exc
    _replace(tmp, final)


__all__ = [
    "StorageWriteError",
    "atomic_path",
    "remove_entry",
    "temporary_name",
    "write_atomic",
    "write_bytes_atomic",
    "write_error",
    "write_json_atomic",
    "write_temporary",
    "write_text_atomic",
]
