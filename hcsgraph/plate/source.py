"""A plate's folder, local or at a URL: what the layout parsers read, and one listing of its files.

The parsers (:mod:`~hcsgraph.plate.imagexpress`, :mod:`~hcsgraph.plate.operaphenix`,
:mod:`~hcsgraph.plate.cellvoyager`, :mod:`~hcsgraph.plate.pattern`, :mod:`~hcsgraph.plate.omezarr`) see a
:class:`PlateSource`, never the filesystem:

* a **local** folder is scanned with :func:`hcsgraph.plate.scan.scan_files` (symlinks followed, problems
  reported) and its files are read with ``open``;
* a folder at a **URL** (``s3://bucket/plates/p07``) is listed once, recursively
  (:func:`hcsgraph.io.location.find`: one paginated ``LIST`` of the prefix, never a request per file),
  and every "is there a file X" question is answered from that listing; only the metadata files a
  layout needs (``.HTD``, ``Index.idx.xml``, ``.mlf``/``.mrf``, Zarr documents) are fetched, concurrently
  where there are many. An OME-Zarr plate is never listed: its documents are read level by level.

Paths in the index are ``source.join(rel)``: local paths as before, URLs without credentials.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hcsgraph.io import location
from hcsgraph.plate.problems import SKIPPED_OUTPUT, SKIPPED_ZARR, PlateProblem
from hcsgraph.plate.scan import (
    OUTPUT_FOLDER_DETAIL,
    OUTPUT_IMAGES_DETAIL,
    RUN_IMAGE_STORES,
    RUN_MANIFEST,
    RUN_STATE_DIR,
    ZARR_MARKERS,
    ZARR_STORE_DETAIL,
    FileScan,
    scan_files,
)


class PlateSource:
    """A plate folder: ``root`` (an absolute local path, or a URL without credentials) and how to read it.

    ``storage_options``: fsspec options for a URL (credentials, endpoint), a
    :class:`~hcsgraph.io.location.StorageOptions`.
    """

    def __init__(self, root: str | os.PathLike, storage_options: Mapping[str, Any] | None = None) -> None:
        text = os.fspath(root)
        self.remote = location.is_url(text)
        self.root = location.normalize_url(text) if self.remote else text
        self.storage_options = location.storage_options(storage_options)
        self._scan: FileScan | None = None
        self._listing: dict[str, int] | None = None
        self._read: dict[str, bytes | None] = {}  # URLs: documents already fetched (each is read once)

    def __repr__(self) -> str:
        return f"PlateSource({self.root!r})"

    # -- names -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The folder's name (``Path.name``)."""
        return location.name(self.root) if self.remote else Path(self.root).name

    @property
    def stem(self) -> str:
        """The folder's name without its last suffix (``Path.stem``: ``plate.zarr`` → ``plate``)."""
        return posixpath.splitext(self.name)[0] if self.remote else Path(self.root).stem

    def join(self, *parts: str) -> str:
        """The full path (or URL) of ``parts`` relative to the folder."""
        if self.remote:
            clean = [p for part in parts for p in part.split("/") if p not in ("", ".")]
            return location.join(self.root, *clean)
        return str(Path(self.root, *parts))

    def path(self, rel: str = "") -> Path | str:
        """A :class:`Path` for a local folder (as the parsers used to get), the URL otherwise."""
        return Path(self.root, rel) if not self.remote else self.join(rel)

    # -- listing ---------------------------------------------------------------------------
    def listing(self) -> dict[str, int]:
        """URLs: every file below the folder (hidden ones included) ``{relative path: size}``, listed once."""
        if self._listing is None:
            self._listing = location.find(self.root, self.storage_options) if self.remote else {}
        return self._listing

    def sizes(self) -> dict[str, int]:
        """URLs: ``{full URL: size}`` of every file the folder's listing gave, if it was listed (no request)."""
        if not self.remote or self._listing is None:
            return {}
        return {self.join(rel): size for rel, size in self._listing.items()}

    def scan(self) -> FileScan:
        """The folder's plate files and the problems met listing them (computed once)."""
        if self._scan is None:
            self._scan = scan_files(self.root) if not self.remote else scan_listing(self.listing())
        return self._scan

    def is_file(self, rel: str) -> bool:
        """Whether the file ``rel`` exists (URLs: answered from the listing, no request)."""
        if self.remote:
            return rel.strip("/") in self.listing()
        return os.path.isfile(os.path.join(self.root, rel))

    def entries(self, rel: str = "") -> tuple[list[str], list[str]]:
        """``(folder names, file names)`` directly in the folder ``rel``, unsorted.

        URLs: from the listing. Local folders: ``os.scandir``; an unreadable folder gives nothing (the
        file scan reports it), entries that cannot be examined (a symlink loop) are left out.
        """
        if self.remote:
            prefix = rel.strip("/") + "/" if rel.strip("/") else ""
            folders, files = set(), []
            for key in self.listing():
                if not key.startswith(prefix):
                    continue
                head, sep, _ = key[len(prefix):].partition("/")
                (folders.add(head) if sep else files.append(head))
            return list(folders), files
        directory = os.path.join(self.root, rel) if rel else self.root
        try:
            with os.scandir(directory) as listing:
                entries = list(listing)
        except OSError:
            return [], []
        folders, files = [], []
        for entry in entries:
            try:
                if entry.is_dir():
                    folders.append(entry.name)
                elif entry.is_file():
                    files.append(entry.name)
            except OSError:
                continue
        return folders, files

    # -- reading ---------------------------------------------------------------------------
    def read_bytes(self, rel: str) -> bytes:
        """The bytes of the file ``rel``; a missing file raises FileNotFoundError."""
        full = self.join(rel)
        if not self.remote:
            with open(full, "rb") as handle:
                return handle.read()
        return location.read_bytes(full, self.storage_options)

    def read_optional(self, rels: Iterable[str]) -> dict[str, bytes | None]:
        """``{rel: bytes, or None when there is no such file}``; URLs: concurrent requests, each file once
        per source (a layout's metadata documents are small)."""
        rels = list(dict.fromkeys(rels))
        if not self.remote:
            out: dict[str, bytes | None] = {}
            for rel in rels:
                full = self.join(rel)
                if os.path.isfile(full):
                    with open(full, "rb") as handle:
                        out[rel] = handle.read()
                else:
                    out[rel] = None
            return out
        wanted = [rel for rel in rels if rel not in self._read]
        if wanted:
            urls = {self.join(rel): rel for rel in wanted}
            found = location.read_many(list(urls), self.storage_options)
            self._read.update({rel: found.get(url) for url, rel in urls.items()})
        return {rel: self._read[rel] for rel in rels}

    def kind(self) -> str | None:
        """``"directory"``, ``"file"`` or None (nothing there)."""
        if not self.remote:
            path = Path(self.root)
            return None if not path.exists() else "directory" if path.is_dir() else "file"
        found = location.info(self.root, self.storage_options)
        return None if found is None else found["type"]


def as_source(root: PlateSource | str | os.PathLike) -> PlateSource:
    """``root`` as a :class:`PlateSource` (a path or URL without options becomes one)."""
    return root if isinstance(root, PlateSource) else PlateSource(root)


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def scan_listing(listing: Iterable[str]) -> FileScan:
    """A :class:`FileScan` from a recursive listing (relative paths), with the local scan's rules.

    Hidden entries are skipped; a sub-folder that is an hcsgraph output (``.hcsgraph`` next to
    ``run.json`` or an image store), the image stores of an output the folder itself is, and Zarr stores
    inside the plate are skipped and reported, as :func:`hcsgraph.plate.scan.scan_files` does.
    """
    files = list(listing)
    children: dict[str, set[str]] = {}
    for rel in files:
        parts = rel.split("/")
        for depth in range(len(parts)):
            if depth < len(parts) - 1:
                children.setdefault("/".join(parts[:depth]), set()).add(parts[depth])
    file_set = set(files)

    def has_dir(folder: str, name: str) -> bool:
        return name in children.get(folder, ())

    def has_file(folder: str, name: str) -> bool:
        return (f"{folder}/{name}" if folder else name) in file_set

    def is_output(folder: str) -> bool:
        return has_dir(folder, RUN_STATE_DIR) and (
            has_file(folder, RUN_MANIFEST) or any(has_dir(folder, s) for s in RUN_IMAGE_STORES))

    scan = FileScan()
    skipped: set[str] = set()
    pending = [""]
    while pending:
        folder = pending.pop()
        output_here = is_output(folder)
        for child in sorted(children.get(folder, ())):
            if child.startswith("."):
                continue
            full = f"{folder}/{child}" if folder else child
            if output_here and child in RUN_IMAGE_STORES:
                scan.problems.append(PlateProblem(SKIPPED_OUTPUT, full, OUTPUT_IMAGES_DETAIL))
                skipped.add(full)
            elif is_output(full):
                scan.problems.append(PlateProblem(SKIPPED_OUTPUT, full, OUTPUT_FOLDER_DETAIL))
                skipped.add(full)
            elif any(has_file(full, marker) for marker in ZARR_MARKERS):
                scan.problems.append(PlateProblem(SKIPPED_ZARR, full, ZARR_STORE_DETAIL))
                skipped.add(full)
            else:
                pending.append(full)
    for rel in files:
        if _hidden(rel):
            continue
        folder = rel.rpartition("/")[0]
        if folder and any(folder == s or folder.startswith(s + "/") for s in skipped):
            continue
        scan.files.append(rel)
    scan.files.sort()
    return scan


def missing_error(source: PlateSource) -> Exception:
    """The error for a plate folder that is not there."""
    import errno

    return FileNotFoundError(errno.ENOENT, "plate directory not found", location.redact(source.root))


__all__ = ["PlateSource", "as_source", "missing_error", "scan_listing"]
