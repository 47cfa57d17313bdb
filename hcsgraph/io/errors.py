"""Exceptions raised by the VFS.

Every exception is a :class:`StorageError` and also the matching builtin exception, so
``except FileNotFoundError`` keeps working. Each message names the path and the backend;
both are also available as the ``path`` and ``backend`` attributes.
"""

from __future__ import annotations

import os
from typing import Any


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    return str(getattr(value, "value", value))


class StorageError(Exception):
    """Base class of every VFS error.

    ``message`` says what went wrong; ``path`` and ``backend`` are prepended so that the
    text always names both.
    """

    def __init__(self, message: str, *, path: Any = None, backend: Any = None) -> None:
        self.path = _text(path)
        self.backend = _text(backend)
        self.reason = message
        where = []
        if self.path is not None:
            where.append(f"path {self.path!r}")
        if self.backend is not None:
            where.append(f"backend {self.backend!r}")
        text = f"{message} ({', '.join(where)})" if where else message
        super().__init__(text)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class StorageFileNotFoundError(StorageError, FileNotFoundError):
    """The path does not exist in the backend."""


class StorageFileExistsError(StorageError, FileExistsError):
    """The path exists already and ``overwrite`` was not set."""


class StorageIsADirectoryError(StorageError, IsADirectoryError):
    """A file operation was given a directory."""


class StorageNotADirectoryError(StorageError, NotADirectoryError):
    """A directory operation was given a file (or a path below a file)."""


class StorageDirectoryNotEmptyError(StorageError, OSError):
    """A non-empty directory was to be deleted without ``recursive=True``."""


class UnknownBackendError(StorageError, KeyError, ValueError):
    """No backend is registered under this name (or its library is not installed)."""


class UnsupportedDataError(StorageError, TypeError):
    """The backend cannot hold this kind of data at this path."""


class PathEscapeError(StorageError, ValueError):
    """The path leaves the backend's root (through ``..`` or an absolute path outside it)."""


class StorageReadError(StorageError, OSError):
    """A stored file exists but cannot be decoded."""
