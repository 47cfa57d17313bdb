"""The memory backend: any Python object, kept in this process, under VFS paths.

Stored data can never be changed by a caller, whatever it does with what it saved or loaded:

* a numpy array is copied once on save and the copy is made read-only; ``load`` returns a
  read-only view of it (no copy), and writing to that view raises ``ValueError``;
* immutable values (numbers, ``str``, ``bytes``, enums, numpy scalars, tuples and frozensets of
  immutable values) are stored and returned as they are;
* anything else (lists, dicts, DataFrames, tensors, ...) is deep-copied on save and deep-copied
  again on every ``load``.

Each process (each Dask worker) has its own store. Directories are tracked explicitly;
saving creates the missing parents.
"""

from __future__ import annotations

import copy
import decimal
import enum
import fractions
import posixpath
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from hcsgraph.config import ZarrConfig
from hcsgraph.io.base import StorageBackend
from hcsgraph.io.errors import (
    StorageDirectoryNotEmptyError,
    StorageIsADirectoryError,
    StorageNotADirectoryError,
    UnsupportedDataError,
)
from hcsgraph.io.paths import PathLike, normalize

_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, range, decimal.Decimal, fractions.Fraction, enum.Enum, np.generic)


def _is_immutable(value: Any) -> bool:
    if isinstance(value, _IMMUTABLE):
        return True
    if isinstance(value, tuple | frozenset):
        return all(_is_immutable(v) for v in value)
    return False


def freeze(value: Any, path: str, backend: str) -> Any:
    """The form in which ``value`` is stored (see the module docstring)."""
    if isinstance(value, np.ndarray) and value.dtype != object:
        stored = np.array(value, copy=True, order="K")
        stored.flags.writeable = False
        return stored
    if _is_immutable(value):
        return value
    try:
        return copy.deepcopy(value)
    except Exception as exc:
        raise UnsupportedDataError(f"{type(value).__name__} cannot be copied into memory storage: {exc}", path=path, backend=backend) from exc


def thaw(stored: Any) -> Any:
    """What ``load`` hands out for a stored value."""
    if isinstance(stored, np.ndarray) and stored.dtype != object:
        return stored.view()
    if _is_immutable(stored):
        return stored
    return copy.deepcopy(stored)


def _parent(key: str) -> str:
    parent = posixpath.dirname(key)
    return parent or "."


class MemoryStorageBackend(StorageBackend):
    """Keeps any Python object in a per-process dictionary keyed by the normalised path."""

    name = "memory"

    def __init__(self, root: PathLike | None = None) -> None:
        super().__init__(root)
        self._files: dict[str, Any] = {}
        self._links: dict[str, str] = {}
        self._children: dict[str, set[str]] = {"/": set(), ".": set()}
        if self.root is not None:
            self._children.setdefault(self.root, set())
        self._lock = threading.RLock()

    # -- internal tree bookkeeping ------------------------------------------------
    def _kind(self, key: str) -> str | None:
        if key in self._files:
            return "file"
        if key in self._links:
            return "link"
        if key in self._children:
            return "dir"
        return None

    def _make_dirs(self, key: str, shown: Any) -> None:
        missing = []
        current = key
        while self._kind(current) is None:
            missing.append(current)
            current = _parent(current)
        if self._kind(current) != "dir":
            raise StorageNotADirectoryError(f"{current!r} is a file, not a directory", path=shown, backend=self.name)
        for d in reversed(missing):
            self._children[d] = set()
            self._children[_parent(d)].add(posixpath.basename(d))

    def _attach(self, key: str) -> None:
        self._children[_parent(key)].add(posixpath.basename(key))

    def _detach(self, key: str) -> None:
        self._files.pop(key, None)
        self._links.pop(key, None)
        self._children.pop(key, None)
        siblings = self._children.get(_parent(key))
        if siblings is not None:
            siblings.discard(posixpath.basename(key))

    def _walk(self, key: str) -> Iterator[str]:
        """``key`` and every key below it, parents first."""
        yield key
        for name in sorted(self._children.get(key, ())):
            yield from self._walk(posixpath.join(key, name))

    def _target(self, key: str, shown: Any) -> str:
        seen = set()
        while key in self._links:
            if key in seen:
                raise self._not_found(shown, "the link points to itself")
            seen.add(key)
            key = self._links[key]
        return key

    def _prepare_write(self, key: str, shown: Any, overwrite: bool) -> None:
        kind = self._kind(key)
        if kind == "dir":
            raise StorageIsADirectoryError("a directory exists at this path", path=shown, backend=self.name)
        if kind is not None and not overwrite:
            raise self._exists_error(shown)
        self._make_dirs(_parent(key), shown)

    # -- data ----------------------------------------------------------------------
    def save(self, data: Any, path: PathLike, *, overwrite: bool = False, zarr_config: ZarrConfig | None = None) -> str:
        """Store ``data`` (any object) at ``path``; ``zarr_config`` is ignored."""
        key = self.resolve(path)
        stored = freeze(data, key, self.name)
        with self._lock:
            self._prepare_write(key, path, overwrite)
            self._detach(key)
            self._files[key] = stored
            self._attach(key)
        return normalize(path, self.name)

    def load(self, path: PathLike) -> Any:
        """The object stored at ``path`` (a read-only array view, the immutable value, or a deep copy)."""
        key = self.resolve(path)
        with self._lock:
            target = self._target(key, path)
            if target in self._files:
                return thaw(self._files[target])
            if target in self._children:
                raise StorageIsADirectoryError("cannot load a directory", path=path, backend=self.name)
        raise self._not_found(path, "no such file" if key == target else "the link's target does not exist")

    # -- queries -------------------------------------------------------------------
    def exists(self, path: PathLike) -> bool:
        return self._kind(self.resolve(path)) is not None

    def is_file(self, path: PathLike) -> bool:
        key = self.resolve(path)
        with self._lock:
            return self._target(key, path) in self._files

    def is_dir(self, path: PathLike) -> bool:
        return self._kind(self.resolve(path)) == "dir"

    def is_symlink(self, path: PathLike) -> bool:
        return self._kind(self.resolve(path)) == "link"

    def _scan(self, path: PathLike) -> list[tuple[str, bool]]:
        key = self.resolve(path)
        with self._lock:
            kind = self._kind(key)
            if kind is None:
                raise self._not_found(path, "no such directory")
            if kind != "dir":
                raise StorageNotADirectoryError("not a directory", path=path, backend=self.name)
            return [(name, posixpath.join(key, name) in self._children) for name in self._children[key]]

    # -- changes -------------------------------------------------------------------
    def ensure_directory(self, path: PathLike) -> str:
        key = self.resolve(path)
        with self._lock:
            self._make_dirs(key, path)
        return normalize(path, self.name)

    def delete(self, path: PathLike, *, recursive: bool = False) -> None:
        key = self.resolve(path)
        with self._lock:
            kind = self._kind(key)
            if kind is None:
                raise self._not_found(path)
            if kind == "dir":
                if key in ("/", ".", self.root):
                    raise StorageIsADirectoryError("the store root cannot be deleted", path=path, backend=self.name)
                if self._children[key] and not recursive:
                    raise StorageDirectoryNotEmptyError("the directory is not empty; pass recursive=True", path=path, backend=self.name)
                for sub in reversed(list(self._walk(key))):
                    self._detach(sub)
            else:
                self._detach(key)

    def _transfer(self, source: PathLike, destination: PathLike, overwrite: bool, keep_source: bool) -> str:
        src, dst = self.resolve(source), self.resolve(destination)
        with self._lock:
            if self._kind(src) is None:
                raise self._not_found(source)
            if dst == src or dst.startswith(src.rstrip("/") + "/"):
                raise StorageNotADirectoryError("cannot copy or move a path into itself", path=destination, backend=self.name)
            self._prepare_write(dst, destination, overwrite)
            self._detach(dst)
            for sub in self._walk(src):
                new = dst + sub[len(src):]
                if sub in self._files:
                    self._files[new] = self._files[sub]  # stored values are never mutated: sharing is safe
                elif sub in self._links:
                    self._links[new] = self._links[sub]
                else:
                    self._children[new] = set()
                self._attach(new)
            if not keep_source:
                for sub in reversed(list(self._walk(src))):
                    self._detach(sub)
        return normalize(destination, self.name)

    def copy(self, source: PathLike, destination: PathLike, *, overwrite: bool = False) -> str:
        return self._transfer(source, destination, overwrite, keep_source=True)

    def move(self, source: PathLike, destination: PathLike, *, overwrite: bool = False) -> str:
        """Move under one lock: other threads see the old or the new state, never a mix."""
        return self._transfer(source, destination, overwrite, keep_source=False)

    def symlink(self, target: PathLike, link: PathLike, *, overwrite: bool = False) -> str:
        src, key = self.resolve(target), self.resolve(link)
        with self._lock:
            if self._kind(src) is None:
                raise self._not_found(target, "the link target does not exist")
            self._prepare_write(key, link, overwrite)
            self._detach(key)
            self._links[key] = src
            self._attach(key)
        return normalize(link, self.name)

    def clear(self) -> None:
        """Forget everything stored in this backend."""
        with self._lock:
            self._files.clear()
            self._links.clear()
            self._children = {"/": set(), ".": set()}
            if self.root is not None:
                self._children.setdefault(self.root, set())
