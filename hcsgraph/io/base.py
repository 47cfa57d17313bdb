"""The storage backend interface and the registry of backends.

:class:`StorageBackend` is the contract every backend implements (memory, disk, zarr, fsspec for URLs).
:data:`storage_registry` is the one registry of the package: it maps a backend name to a
backend instance, created on first use from a ``"module:Class"`` entry so that a backend's
library is imported only when the backend is asked for.
"""

from __future__ import annotations

import importlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

from hcsgraph.config import Backend, ZarrConfig
from hcsgraph.io import paths
from hcsgraph.io.errors import (
    StorageError,
    StorageFileExistsError,
    StorageFileNotFoundError,
    StorageNotADirectoryError,
    UnknownBackendError,
)


class StorageBackend(ABC):
    """A place where the VFS keeps data under POSIX-style paths.

    Paths follow :mod:`hcsgraph.io.paths`: relative paths resolve against ``root``; a path
    that leaves the root raises :class:`~hcsgraph.io.errors.PathEscapeError`. Saving creates
    missing parent directories. An existing file is replaced only with ``overwrite=True``.
    Listings return full paths (the directory as given, joined with each name) in natural order.
    """

    name: str = "storage"

    def __init__(self, root: paths.PathLike | None = None) -> None:
        self.root = paths.normalize_root(root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={self.root!r})"

    # -- paths ------------------------------------------------------------------
    def resolve(self, path: paths.PathLike) -> str:
        """The backend-internal form of ``path`` (raises PathEscapeError outside the root)."""
        return paths.resolve(path, self.root, self.name)

    def _not_found(self, path: Any, what: str = "no such file or directory") -> StorageFileNotFoundError:
        return StorageFileNotFoundError(what, path=path, backend=self.name)

    def _exists_error(self, path: Any) -> StorageFileExistsError:
        return StorageFileExistsError("the path exists already; pass overwrite=True to replace it", path=path, backend=self.name)

    # -- data -------------------------------------------------------------------
    @abstractmethod
    def save(self, data: Any, path: paths.PathLike, *, overwrite: bool = False, zarr_config: ZarrConfig | None = None) -> str:
        """Store ``data`` at ``path`` and return the normalised path. ``zarr_config`` is used by the zarr backend only."""

    @abstractmethod
    def load(self, path: paths.PathLike) -> Any:
        """Return the data stored at ``path``."""

    def save_batch(
        self,
        data: Sequence[Any],
        file_paths: Sequence[paths.PathLike],
        *,
        overwrite: bool = False,
        zarr_config: ZarrConfig | None = None,
    ) -> list[str]:
        """Store each item at its path. Every path is checked before anything is written."""
        self._check_batch(data, file_paths, overwrite)
        return [self.save(d, p, overwrite=overwrite, zarr_config=zarr_config) for d, p in zip(data, file_paths, strict=True)]

    def load_batch(self, file_paths: Sequence[paths.PathLike]) -> list[Any]:
        """Return the data stored at each path, in order."""
        return [self.load(p) for p in file_paths]

    def _check_batch(self, data: Sequence[Any], file_paths: Sequence[paths.PathLike], overwrite: bool) -> None:
        if len(data) != len(file_paths):
            raise StorageError(
                f"save_batch got {len(data)} items but {len(file_paths)} paths",
                path=file_paths[0] if file_paths else None,
                backend=self.name,
            )
        seen: set[str] = set()
        for p in file_paths:
            key = self.resolve(p)
            if key in seen:
                raise StorageError("the same path appears twice in one batch", path=p, backend=self.name)
            seen.add(key)
            if not overwrite and self.exists(p):
                raise self._exists_error(p)

    # -- queries ----------------------------------------------------------------
    @abstractmethod
    def exists(self, path: paths.PathLike) -> bool:
        """Whether a file or directory exists at ``path``."""

    @abstractmethod
    def is_file(self, path: paths.PathLike) -> bool:
        """Whether ``path`` holds stored data."""

    @abstractmethod
    def is_dir(self, path: paths.PathLike) -> bool:
        """Whether ``path`` is a directory."""

    @abstractmethod
    def is_symlink(self, path: paths.PathLike) -> bool:
        """Whether ``path`` is a link made by :meth:`symlink`."""

    @abstractmethod
    def _scan(self, path: paths.PathLike) -> list[tuple[str, bool]]:
        """``(name, is_dir)`` for each entry directly in the directory ``path``.

        Raises StorageFileNotFoundError when it is missing, StorageNotADirectoryError when it is a file.
        """

    def list_dir(self, path: paths.PathLike) -> list[str]:
        """Names of the entries directly in the directory ``path``, in natural order."""
        return paths.natural_sort(name for name, _ in self._scan(path))

    def list_files(
        self,
        directory: paths.PathLike,
        pattern: str | None = None,
        extensions: Iterable[str] | str | None = None,
        recursive: bool = False,
    ) -> list[str]:
        """Full paths of the files in ``directory``, naturally sorted.

        ``pattern`` is a glob matched against the file name; ``extensions`` filters by suffix,
        case-insensitively, with or without the dot; ``recursive`` descends into subdirectories.
        """
        top = paths.normalize(directory, self.name)
        wanted = paths.normalize_extensions(extensions)
        found: list[str] = []
        pending = [top]
        while pending:
            current = pending.pop()
            for name, is_dir in self._scan(current):
                full = paths.join(current, name)
                if is_dir:
                    if recursive:
                        pending.append(full)
                elif paths.name_matches(name, pattern, wanted):
                    found.append(full)
        return paths.natural_sort(found)

    def list_subdirectories(self, directory: paths.PathLike, recursive: bool = False) -> list[str]:
        """Full paths of the directories below ``directory`` (parents before children)."""
        top = paths.normalize(directory, self.name)
        found: list[str] = []
        pending = [top]
        while pending:
            current = pending.pop(0)
            for name, is_dir in self._scan(current):
                if is_dir:
                    full = paths.join(current, name)
                    found.append(full)
                    if recursive:
                        pending.append(full)
        return found

    # -- changes ----------------------------------------------------------------
    @abstractmethod
    def ensure_directory(self, path: paths.PathLike) -> str:
        """Create the directory ``path`` and its parents if missing; return the normalised path."""

    @abstractmethod
    def delete(self, path: paths.PathLike, *, recursive: bool = False) -> None:
        """Remove a file, a link, an empty directory, or (with ``recursive``) a directory tree."""

    @abstractmethod
    def copy(self, source: paths.PathLike, destination: paths.PathLike, *, overwrite: bool = False) -> str:
        """Copy a file or a directory tree; return the destination."""

    @abstractmethod
    def move(self, source: paths.PathLike, destination: paths.PathLike, *, overwrite: bool = False) -> str:
        """Move a file or a directory tree atomically where the backend allows; return the destination."""

    @abstractmethod
    def symlink(self, target: paths.PathLike, link: paths.PathLike, *, overwrite: bool = False) -> str:
        """Make ``link`` refer to the existing file ``target``; return ``link``."""

    def _require_dir(self, path: paths.PathLike) -> None:
        if not self.exists(path):
            raise self._not_found(path, "no such directory")
        if not self.is_dir(path):
            raise StorageNotADirectoryError("not a directory", path=path, backend=self.name)


BackendName = Backend | str


def backend_key(name: BackendName) -> str:
    """The registry key for a :class:`Backend` member or its string value."""
    if isinstance(name, Backend):
        return name.value
    if isinstance(name, str):
        return getattr(name, "value", name).lower()
    raise UnknownBackendError(f"a backend is named by a Backend or a str, not {type(name).__name__}", backend=repr(name))


class StorageRegistry:
    """Backend name → backend instance.

    An entry is a :class:`StorageBackend` instance or a ``"module:Class"`` string; a string
    entry is imported and instantiated (without arguments) the first time it is asked for,
    and an import failure names the package to install.
    """

    def __init__(self, entries: dict[str, StorageBackend | str] | None = None, hints: dict[str, str] | None = None) -> None:
        self._entries: dict[str, StorageBackend | str] = {}
        self._hints: dict[str, str] = dict(hints or {})
        self._lock = threading.RLock()
        for name, backend in (entries or {}).items():
            self.register(name, backend)

    def register(self, name: BackendName, backend: StorageBackend | str, *, install_hint: str | None = None) -> None:
        """Register (or replace) the backend called ``name``: an instance or a ``"module:Class"`` path."""
        if not isinstance(backend, StorageBackend | str):
            raise TypeError(f"backend {name!r} must be a StorageBackend instance or a 'module:Class' string, not {type(backend).__name__}")
        key = backend_key(name)
        with self._lock:
            self._entries[key] = backend
            if install_hint is not None:
                self._hints[key] = install_hint

    def names(self) -> list[str]:
        """Every registered name, loadable or not."""
        return sorted(self._entries)

    def get_backend(self, name: BackendName) -> StorageBackend:
        """The backend called ``name`` (a :class:`Backend` or its string value)."""
        key = backend_key(name)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                known = ", ".join(repr(n) for n in self.names())
                raise UnknownBackendError(f"no storage backend is registered under this name; known: {known}", backend=key)
            if isinstance(entry, str):
                entry = self._load(key, entry)
                self._entries[key] = entry
            return entry

    def get_available_backends(self) -> list[str]:
        """Names of the registered backends whose libraries import, in registration order."""
        available = []
        for name in list(self._entries):
            try:
                self.get_backend(name)
            except UnknownBackendError:
                continue
            available.append(name)
        return available

    def __contains__(self, name: object) -> bool:
        try:
            return backend_key(name) in self._entries  # type: ignore[arg-type]
        except UnknownBackendError:
            return False

    def _load(self, key: str, dotted: str) -> StorageBackend:
        module_name, _, attr = dotted.partition(":")
        if not attr:
            module_name, _, attr = dotted.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except ImportError as exc:
            hint = self._hints.get(key, "")
            raise UnknownBackendError(
                f"the backend cannot be loaded from {dotted!r}: {exc}" + (f"; {hint}" if hint else ""),
                backend=key,
            ) from exc
        backend = cls()
        if not isinstance(backend, StorageBackend):
            raise TypeError(f"{dotted!r} did not produce a StorageBackend")
        return backend


FSSPEC = "fsspec"
"""Registry name of the URL store (:class:`hcsgraph.io.fsspec_store.FsspecStorageBackend`): files at
``s3://``, ``gs://``, ... URLs, in the disk backend's formats. Its registry instance uses fsspec's default
credentials; build ``FsspecStorageBackend(storage_options=...)`` for others."""

storage_registry = StorageRegistry(
    {
        Backend.MEMORY.value: "hcsgraph.io.memory:MemoryStorageBackend",
        Backend.DISK.value: "hcsgraph.io.disk:DiskStorageBackend",
        Backend.ZARR.value: "hcsgraph.io.zarr:ZarrStorageBackend",
        FSSPEC: "hcsgraph.io.fsspec_store:FsspecStorageBackend",
    },
    hints={
        Backend.DISK.value: "install tifffile: pip install tifffile",
        Backend.ZARR.value: "install zarr 3: pip install 'zarr>=3'",
        FSSPEC: "install fsspec and the filesystem of your URLs: pip install fsspec s3fs",
    },
)
"""The package's registry of storage backends (one instance per backend and process)."""
