"""The URL store: files at ``s3://``, ``gs://``, ``az://``, ``memory://`` ... URLs, through fsspec.

Registered as ``"fsspec"`` in :data:`hcsgraph.io.storage_registry` (``FileManager().save(image,
"s3://bucket/out/A01/img_1.tif", "fsspec")``). It keeps exactly the files the disk backend keeps
(:mod:`hcsgraph.io.disk`: ``.tif``/``.tiff`` with hcsgraph's shape tag, ``.npy``, text, bytes), byte for
byte, so a path means the same data in both; it accepts URLs only (the disk backend, local paths only).

On object stores:

* every save is one ``PUT`` of the whole encoded file (atomic: a reader sees the old object or the new
  one); a save without ``overwrite`` is a conditional ``PUT`` on S3 (``If-None-Match: *``), so two
  writers never both "create" the same file;
* a directory exists while any key lies under its prefix; :meth:`~FsspecStorageBackend.ensure_directory`
  writes an empty ``<dir>/`` marker so that an empty directory exists too; listings never show markers;
* ``list_files(..., recursive=True)`` is one paginated ``LIST`` of the prefix, ``list_dir`` and
  non-recursive listings one delimited ``LIST``; ``save_batch`` checks its targets with one listing per
  parent directory and writes concurrently; ``load_batch`` reads concurrently;
* ``copy`` is a server-side copy of each object; ``move`` is a copy, then a delete (not atomic);
* a link (:meth:`~FsspecStorageBackend.symlink`) is a small object holding :data:`LINK_MAGIC` and the
  target's URL; loading it loads the target.

Credentials and endpoints come from ``storage_options`` (see :mod:`hcsgraph.io.location`), else from
fsspec's usual places (``AWS_*`` variables, AWS profile/config). The backend's ``repr`` never shows a
credential. Errors are the VFS's (:mod:`hcsgraph.io.errors`), naming the URL and backend ``'fsspec'``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import fsspec  # noqa: F401 - the backend's library: the registry reports it missing when absent

from hcsgraph.config import ZarrConfig
from hcsgraph.io import location, paths
from hcsgraph.io.base import StorageBackend, StorageRegistry
from hcsgraph.io.disk import decode_file, encode_file
from hcsgraph.io.errors import (
    PathEscapeError,
    StorageError,
    StorageFileExistsError,
    StorageIsADirectoryError,
    StorageNotADirectoryError,
)
from hcsgraph.io.paths import PathLike

LINK_MAGIC = b"\x00hcsgraph-vfs-link-v1\x00\n"
"""The first bytes of a link object; the rest is the target's URL (UTF-8)."""
_MAX_LINK_BYTES = 4096
_MAX_LINK_DEPTH = 8


class FsspecStorageBackend(StorageBackend):
    """Files (disk formats) at URLs, through fsspec; see the module docstring.

    ``root``: a URL; relative paths resolve against it and paths outside it are refused. Without a
    root every path must be a URL. ``storage_options``: fsspec options (credentials, endpoint), kept
    as a :class:`~hcsgraph.io.location.StorageOptions` (never shown by ``repr``).
    """

    name = "fsspec"

    def __init__(self, root: PathLike | None = None, storage_options: Mapping[str, Any] | None = None) -> None:
        if root is not None and not location.is_url(root):
            raise StorageError("the root of the fsspec backend must be a URL (s3://bucket/prefix, ...)",
                               path=root, backend=self.name)
        super().__init__(root)
        self.storage_options = location.storage_options(storage_options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={self.root!r}, storage_options={self.storage_options!r})"

    # -- paths ------------------------------------------------------------------
    def resolve(self, path: PathLike) -> str:
        """The normalised URL of ``path``; raises PathEscapeError for ``..`` or a path outside the root."""
        text = paths.as_posix(path, self.name)
        shown = location.redact(text)
        url = paths.split_url(text)
        if self.root is None:
            if url is None:
                raise StorageError(
                    "the fsspec backend keeps data at URLs (s3://bucket/..., gs://..., memory://...); "
                    "use the disk backend for local paths", path=shown, backend=self.name)
            if ".." in url[1].split("/"):
                raise PathEscapeError("'..' is not allowed in a VFS path", path=shown, backend=self.name)
            return paths.normalize(text, self.name)
        if url is None:
            if text.startswith("/"):
                raise PathEscapeError(f"the path leaves the store root {self.root!r}", path=shown, backend=self.name)
            text = f"{self.root}/{text}"
        proto, rest = paths.split_url(text) or ("", "")
        root_proto, root_rest = paths.split_url(self.root) or ("", "")
        rest = posixpath.normpath("/" + rest).lstrip("/")
        if proto.lower() != root_proto.lower() or not (rest == root_rest or rest.startswith(root_rest.rstrip("/") + "/")):
            raise PathEscapeError(f"the path leaves the store root {self.root!r}", path=shown, backend=self.name)
        return f"{root_proto}://{rest}"

    def _shown(self, path: Any) -> str:
        return location.redact(paths.as_posix(path, self.name) if isinstance(path, str) else str(path))

    def _again(self, exc: StorageError, path: Any) -> StorageError:
        """A location error re-raised as this backend's (same class and reason, the caller's path)."""
        return type(exc)(exc.reason, path=self._shown(path), backend=self.name)

    def _call(self, path: Any, func, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, storage_options=self.storage_options, **kwargs)
        except StorageError as exc:
            raise self._again(exc, path) from None

    def _info(self, path: PathLike) -> tuple[str, dict[str, Any] | None]:
        url = self.resolve(path)
        return url, self._call(path, location.info, url)

    # -- queries ----------------------------------------------------------------
    def exists(self, path: PathLike) -> bool:
        return self._info(path)[1] is not None

    def is_file(self, path: PathLike) -> bool:
        found = self._info(path)[1]
        return found is not None and found["type"] == "file"

    def is_dir(self, path: PathLike) -> bool:
        found = self._info(path)[1]
        return found is not None and found["type"] == "directory"

    def is_symlink(self, path: PathLike) -> bool:
        url, found = self._info(path)
        if found is None or found["type"] != "file" or found["size"] > _MAX_LINK_BYTES:
            return False
        head = self._call(path, location.read_bytes, url, start=0, end=len(LINK_MAGIC))
        return head == LINK_MAGIC

    def _scan(self, path: PathLike) -> list[tuple[str, bool]]:
        return self._call(path, location.scandir, self.resolve(path))

    def list_files(
        self,
        directory: PathLike,
        pattern: str | None = None,
        extensions: Iterable[str] | str | None = None,
        recursive: bool = False,
    ) -> list[str]:
        """Full paths of the files in ``directory``, naturally sorted; recursive: one listing of the prefix."""
        if not recursive:
            return super().list_files(directory, pattern=pattern, extensions=extensions, recursive=False)
        top = paths.normalize(directory, self.name)
        url = self.resolve(directory)
        found = self._call(directory, location.find, url)
        if not found:
            self._require_dir(directory)
        wanted = paths.normalize_extensions(extensions)
        return paths.natural_sort(
            paths.join(top, rel) for rel in found if paths.name_matches(rel.rsplit("/", 1)[-1], pattern, wanted))

    # -- data -------------------------------------------------------------------
    def _encode(self, data: Any, path: PathLike, url: str) -> bytes:
        return encode_file(data, path, posixpath.splitext(url)[1].lower(), self.name)

    def save(self, data: Any, path: PathLike, *, overwrite: bool = False, zarr_config: ZarrConfig | None = None) -> str:
        """Write ``data`` as one object (see the module docstring); ``zarr_config`` is ignored."""
        url = self.resolve(path)
        payload = self._encode(data, path, url)
        found = self._call(path, location.info, url)
        self._check_target(path, found, overwrite)
        self._put(path, url, payload, overwrite)
        return paths.normalize(path, self.name)

    def _check_target(self, path: PathLike, found: dict[str, Any] | None, overwrite: bool) -> None:
        if found is None:
            return
        if found["type"] == "directory":
            raise StorageIsADirectoryError("a directory exists at this path", path=self._shown(path), backend=self.name)
        if not overwrite:
            raise self._exists_error(self._shown(path))

    def _put(self, path: PathLike, url: str, payload: bytes, overwrite: bool) -> None:
        if overwrite:
            self._call(path, location.write_bytes_atomic, url, payload)
            return
        try:
            self._call(path, location.write_bytes_exclusive, url, payload)
        except StorageFileExistsError:
            raise self._exists_error(self._shown(path)) from None

    def _check_batch(self, data: Sequence[Any], file_paths: Sequence[PathLike], overwrite: bool) -> None:
        """Every target checked with one listing per parent directory (not a request per file)."""
        if len(data) != len(file_paths):
            raise StorageError(f"save_batch got {len(data)} items but {len(file_paths)} paths",
                               path=file_paths[0] if file_paths else None, backend=self.name)
        seen: set[str] = set()
        by_parent: dict[str, list[tuple[PathLike, str]]] = {}
        for p in file_paths:
            url = self.resolve(p)
            if url in seen:
                raise StorageError("the same path appears twice in one batch", path=self._shown(p), backend=self.name)
            seen.add(url)
            by_parent.setdefault(location.parent(url), []).append((p, url))
        for parent, members in by_parent.items():
            entries = dict(self._call(parent, location.scandir, parent, missing_ok=True))
            for p, url in members:
                is_dir = entries.get(location.name(url))
                if is_dir is True:
                    raise StorageIsADirectoryError("a directory exists at this path", path=self._shown(p),
                                                   backend=self.name)
                if is_dir is False and not overwrite:
                    raise self._exists_error(self._shown(p))

    def save_batch(
        self,
        data: Sequence[Any],
        file_paths: Sequence[PathLike],
        *,
        overwrite: bool = False,
        zarr_config: ZarrConfig | None = None,
    ) -> list[str]:
        """Write one object per path, concurrently, once every path is checked and every item encoded."""
        self._check_batch(data, file_paths, overwrite)
        urls = [self.resolve(p) for p in file_paths]
        payloads = [self._encode(d, p, u) for d, p, u in zip(data, file_paths, urls, strict=True)]
        if not urls:
            return []
        if overwrite or location.protocol(urls[0]) not in location.S3_PROTOCOLS:
            fs, _ = location.filesystem(urls[0], self.storage_options)
            targets = {location.filesystem(u, self.storage_options)[1]: b for u, b in zip(urls, payloads, strict=True)}
            self._call(file_paths[0], location.call, "cannot write the files", urls[0], fs.pipe, targets)
        else:
            for p, u, b in zip(file_paths, urls, payloads, strict=True):
                self._put(p, u, b, overwrite=False)
        return [paths.normalize(p, self.name) for p in file_paths]

    def load(self, path: PathLike) -> Any:
        """The data of the file at ``path`` (decoded by its extension, as the disk backend does)."""
        url = self.resolve(path)
        raw = self._read(path, url)
        return decode_file(raw, posixpath.splitext(url)[1].lower(), self._shown(path), self.name)

    def _read(self, path: PathLike, url: str, raw: bytes | None = None, depth: int = 0) -> bytes:
        if raw is None:
            try:
                raw = location.read_bytes(url, self.storage_options)
            except StorageError as exc:
                if isinstance(exc, FileNotFoundError):
                    if self.is_dir(url):
                        raise StorageIsADirectoryError("cannot load a directory", path=self._shown(path),
                                                       backend=self.name) from None
                    raise self._not_found(self._shown(path), "no such file") from None
                raise self._again(exc, path) from None
        if raw.startswith(LINK_MAGIC) and len(raw) <= _MAX_LINK_BYTES:
            if depth >= _MAX_LINK_DEPTH:
                raise StorageError("too many levels of links", path=self._shown(path), backend=self.name)
            target = raw[len(LINK_MAGIC):].decode("utf-8")
            try:
                return self._read(path, target, None, depth + 1)
            except FileNotFoundError:
                raise self._not_found(self._shown(path), f"the link target {location.redact(target)!r} does not exist") from None
        return raw

    def load_batch(self, file_paths: Sequence[PathLike]) -> list[Any]:
        """The data at each path, in order, read concurrently."""
        urls = [self.resolve(p) for p in file_paths]
        try:
            raws = location.read_many(urls, self.storage_options)
        except StorageError as exc:
            raise self._again(exc, file_paths[0]) from None
        out = []
        for p, u in zip(file_paths, urls, strict=True):
            raw = self._read(p, u, raws.get(u))
            out.append(decode_file(raw, posixpath.splitext(u)[1].lower(), self._shown(p), self.name))
        return out

    # -- changes ----------------------------------------------------------------
    def ensure_directory(self, path: PathLike) -> str:
        url, found = self._info(path)
        if found is not None and found["type"] == "file":
            raise StorageNotADirectoryError("a file exists at this path", path=self._shown(path), backend=self.name)
        if found is None:
            self._call(path, location.makedirs, url)
        return paths.normalize(path, self.name)

    def delete(self, path: PathLike, *, recursive: bool = False) -> None:
        url, found = self._info(path)
        if found is None:
            raise self._not_found(self._shown(path))
        if found["type"] == "directory" and recursive and self.root is not None and url == self.root:
            raise StorageIsADirectoryError("the store root cannot be deleted", path=self._shown(path), backend=self.name)
        self._call(path, location.remove, url, recursive=recursive)

    def _check_transfer(self, source: PathLike, destination: PathLike, overwrite: bool) -> tuple[str, str, dict]:
        src, found = self._info(source)
        if found is None:
            raise self._not_found(self._shown(source))
        dst, there = self._info(destination)
        if dst == src or dst.startswith(src.rstrip("/") + "/"):
            raise StorageNotADirectoryError("cannot copy or move a path into itself", path=self._shown(destination),
                                            backend=self.name)
        if there is not None:
            if there["type"] == "directory" and found["type"] == "file":
                raise StorageIsADirectoryError("a directory exists at this path", path=self._shown(destination),
                                               backend=self.name)
            if not overwrite:
                raise self._exists_error(self._shown(destination))
            self._call(destination, location.remove, dst, recursive=True)
        return src, dst, found

    def copy(self, source: PathLike, destination: PathLike, *, overwrite: bool = False) -> str:
        """Server-side copy of a file, or of every object of a directory tree."""
        src, dst, _ = self._check_transfer(source, destination, overwrite)
        self._call(destination, location.copy, src, dst)
        return paths.normalize(destination, self.name)

    def move(self, source: PathLike, destination: PathLike, *, overwrite: bool = False) -> str:
        """A copy, then the delete of the source (object stores have no rename; not atomic)."""
        self.copy(source, destination, overwrite=overwrite)
        self._call(source, location.remove, self.resolve(source), recursive=True)
        return paths.normalize(destination, self.name)

    def symlink(self, target: PathLike, link: PathLike, *, overwrite: bool = False) -> str:
        """Write a link object at ``link`` that loads as ``target`` (an existing file)."""
        src, found = self._info(target)
        if found is None:
            raise self._not_found(self._shown(target), "the link target does not exist")
        url, there = self._info(link)
        self._check_target(link, there, overwrite)
        self._put(link, url, LINK_MAGIC + src.encode("utf-8"), overwrite)
        return paths.normalize(link, self.name)


def registry_for_urls(storage_options: Mapping[str, Any] | None = None) -> StorageRegistry:
    """A registry for work whose files live at URLs: ``"fsspec"`` **and** ``"disk"`` are one
    :class:`FsspecStorageBackend` with ``storage_options`` (it writes the disk backend's formats, so code
    that names ``"disk"``, such as the materializers, writes to the URLs it is given); ``"memory"`` and
    ``"zarr"`` are the package's own instances (the zarr backend keeps local paths only).

    ``FileManager(registry_for_urls(index.storage_options))`` on a worker: the options travel pickled.
    """
    from hcsgraph.io.base import storage_registry

    url_store = FsspecStorageBackend(storage_options=storage_options)
    return StorageRegistry({
        "memory": storage_registry.get_backend("memory"),
        "disk": url_store,
        "zarr": storage_registry.get_backend("zarr"),
        "fsspec": url_store,
    })


__all__ = ["LINK_MAGIC", "FsspecStorageBackend", "registry_for_urls"]
