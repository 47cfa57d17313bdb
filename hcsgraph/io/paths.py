"""VFS path rules, shared by every backend.

A VFS path is a POSIX-style string (or a :class:`os.PathLike`). It means the same in every
backend: ``/out/A01/img_1.tif`` is the key ``/out/A01/img_1.tif`` in memory, the file of that
name on disk, and the Zarr array stored in the directory of that name.

A backend built with ``root=None`` takes paths as they are but refuses any ``..`` component.
A backend with a root resolves relative paths against it and refuses any path, absolute or
relative, that ends up outside it.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
from collections.abc import Iterable
from typing import Any

from natsort import natsorted

from hcsgraph.io.errors import PathEscapeError, StorageError

PathLike = str | os.PathLike[str]

TEMP_PREFIX = ".hcsgraph-tmp-"
"""Name prefix of the temporary files and directories written before an atomic rename."""


def as_posix(path: Any, backend: str) -> str:
    """``path`` as a POSIX string; raise a :class:`StorageError` for anything else."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise StorageError(f"a path must be a str or os.PathLike, not {type(path).__name__}", path=path, backend=backend)
    if not path:
        raise StorageError("the path is empty", path=path, backend=backend)
    if os.sep != "/":
        path = path.replace(os.sep, "/")
    return path


_URL_RE = re.compile(r"^(?P<protocol>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>.*)$", re.DOTALL)


def split_url(text: str) -> tuple[str, str] | None:
    """``("s3", "bucket/key")`` for a URL (any protocol but ``file``), None for a local path."""
    match = _URL_RE.match(text)
    if match is None or match["protocol"].lower() in ("file", "local"):
        return None
    return match["protocol"], match["rest"]


def normalize(path: Any, backend: str) -> str:
    """The normalised form of ``path`` as the caller wrote it (used in listings and messages).

    A URL keeps its ``protocol://`` and has the rest normalised (``s3://b/x//y/`` → ``s3://b/x/y``).
    """
    text = as_posix(path, backend)
    url = split_url(text)
    if url is not None:
        rest = posixpath.normpath(url[1]) if url[1] else ""
        return f"{url[0]}://{'' if rest == '.' else rest.lstrip('/')}"
    return posixpath.normpath(text) if text not in ("/", "//") else "/"


def resolve(path: Any, root: str | None, backend: str) -> str:
    """The backend-internal path of ``path``: normalised, joined to ``root``, checked to stay inside it."""
    text = as_posix(path, backend)
    if root is None:
        if ".." in text.split("/"):
            raise PathEscapeError("'..' is not allowed in a VFS path", path=text, backend=backend)
        return normalize(text, backend)
    joined = posixpath.normpath(posixpath.join(root, text))
    if joined != root and not joined.startswith(root.rstrip("/") + "/"):
        raise PathEscapeError(f"the path leaves the store root {root!r}", path=text, backend=backend)
    return joined


def normalize_root(root: PathLike | None) -> str | None:
    """An absolute, normalised root directory, or None."""
    if root is None:
        return None
    text = os.fspath(root).replace(os.sep, "/")
    if split_url(text) is not None:
        return normalize(text, "root")
    return posixpath.normpath(posixpath.abspath(text)) if os.sep == "/" else posixpath.normpath(text)


def join(directory: str, name: str) -> str:
    """``directory/name`` without doubling the separator."""
    return name if directory in ("", ".") else posixpath.join(directory, name)


def normalize_extensions(extensions: Iterable[str] | str | None) -> frozenset[str] | None:
    """Extensions lower-cased with a leading dot (``"TIF"`` and ``".tif"`` both become ``".tif"``)."""
    if extensions is None:
        return None
    if isinstance(extensions, str):
        extensions = [extensions]
    return frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)


def name_matches(name: str, pattern: str | None, extensions: frozenset[str] | None) -> bool:
    """Whether a file name passes the glob ``pattern`` and the ``extensions`` filter."""
    if pattern is not None and not fnmatch.fnmatchcase(name, pattern):
        return False
    if extensions is not None:
        lower = name.lower()
        return any(lower.endswith(ext) for ext in extensions)
    return True


def natural_sort(paths: Iterable[str]) -> list[str]:
    """Natural order: ``image_2`` before ``image_10``."""
    return natsorted(paths)


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary entry of an unfinished atomic write."""
    return name.startswith(TEMP_PREFIX)
