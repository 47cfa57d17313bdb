"""FileManager: the one entry point for reading and writing through the VFS.

Every method takes the backend as a :class:`~hcsgraph.config.Backend` or its string value
(``"memory"``, ``"disk"``, ``"zarr"``) and looks it up in the registry it was given.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from hcsgraph.config import ZarrConfig
from hcsgraph.io import paths
from hcsgraph.io.base import BackendName, StorageBackend, StorageRegistry, storage_registry
from hcsgraph.io.errors import UnknownBackendError, UnsupportedDataError
from hcsgraph.io.paths import PathLike

IMAGE_EXTENSIONS = frozenset({".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy", ".zarr"})
"""What :meth:`FileManager.list_image_files` lists unless told otherwise."""


class FileManager:
    """Backend-independent file operations over a :class:`StorageRegistry`."""

    def __init__(self, registry: StorageRegistry = storage_registry) -> None:
        self.registry = registry

    def backend(self, backend: BackendName, path: Any = None) -> StorageBackend:
        """The backend instance for ``backend``; an unknown name raises UnknownBackendError naming ``path``."""
        try:
            return self.registry.get_backend(backend)
        except UnknownBackendError as exc:
            raise UnknownBackendError(exc.reason, path=path, backend=exc.backend) from None

    # -- data ----------------------------------------------------------------------
    def save(
        self,
        data: Any,
        path: PathLike,
        backend: BackendName,
        *,
        overwrite: bool = False,
        zarr_config: ZarrConfig | None = None,
    ) -> str:
        """Store ``data`` at ``path``; an existing file is replaced only with ``overwrite=True``."""
        return self.backend(backend, path).save(data, path, overwrite=overwrite, zarr_config=zarr_config)

    def load(self, path: PathLike, backend: BackendName) -> Any:
        """The data stored at ``path``."""
        return self.backend(backend, path).load(path)

    def save_array(
        self,
        array: Any,
        path: PathLike,
        backend: BackendName,
        *,
        overwrite: bool = False,
        zarr_config: ZarrConfig | None = None,
    ) -> str:
        """Store an array (numpy, or any array object the memory backend should keep) at ``path``."""
        if isinstance(array, str | bytes | bytearray) or not (isinstance(array, np.ndarray) or hasattr(array, "__array__") or hasattr(array, "shape")):
            raise UnsupportedDataError(f"save_array expects an array, got {type(array).__name__}", path=path, backend=backend)
        return self.save(array, path, backend, overwrite=overwrite, zarr_config=zarr_config)

    def load_array(self, path: PathLike, backend: BackendName) -> Any:
        """The array stored at ``path`` (exact dtype and shape)."""
        data = self.load(path, backend)
        if isinstance(data, str | bytes) or not hasattr(data, "shape"):
            raise UnsupportedDataError(f"the stored data is a {type(data).__name__}, not an array", path=path, backend=backend)
        return data

    def save_batch(
        self,
        data: Sequence[Any],
        output_paths: Sequence[PathLike],
        backend: BackendName,
        *,
        overwrite: bool = False,
        zarr_config: ZarrConfig | None = None,
    ) -> list[str]:
        """Store ``data[i]`` at ``output_paths[i]``; every path is checked before anything is written."""
        first = output_paths[0] if len(output_paths) else None
        return self.backend(backend, first).save_batch(list(data), list(output_paths), overwrite=overwrite, zarr_config=zarr_config)

    def load_batch(self, file_paths: Sequence[PathLike], backend: BackendName) -> list[Any]:
        """The data stored at each path, in order."""
        first = file_paths[0] if len(file_paths) else None
        return self.backend(backend, first).load_batch(list(file_paths))

    # -- listing -------------------------------------------------------------------
    def list_files(
        self,
        directory: PathLike,
        backend: BackendName,
        pattern: str | None = None,
        extensions: Iterable[str] | str | None = None,
        recursive: bool = False,
    ) -> list[str]:
        """Full paths of the files in ``directory`` in natural order.

        ``pattern``: glob on the file name; ``extensions``: case-insensitive suffixes, with or
        without the dot; ``recursive``: include subdirectories.
        """
        return self.backend(backend, directory).list_files(directory, pattern=pattern, extensions=extensions, recursive=recursive)

    def list_image_files(
        self,
        directory: PathLike,
        backend: BackendName,
        pattern: str | None = None,
        extensions: Iterable[str] | str | None = None,
        recursive: bool = False,
    ) -> list[str]:
        """Like :meth:`list_files`, keeping image files (:data:`IMAGE_EXTENSIONS` unless ``extensions`` is given)."""
        return self.list_files(directory, backend, pattern, IMAGE_EXTENSIONS if extensions is None else extensions, recursive)

    def list_dir(self, path: PathLike, backend: BackendName) -> list[str]:
        """Names of the entries (files and directories) directly in ``path``, in natural order."""
        return self.backend(backend, path).list_dir(path)

    # -- queries -------------------------------------------------------------------
    def exists(self, path: PathLike, backend: BackendName) -> bool:
        """Whether a file or directory exists at ``path``."""
        return self.backend(backend, path).exists(path)

    def is_file(self, path: PathLike, backend: BackendName) -> bool:
        """Whether ``path`` holds stored data."""
        return self.backend(backend, path).is_file(path)

    def is_dir(self, path: PathLike, backend: BackendName) -> bool:
        """Whether ``path`` is a directory."""
        return self.backend(backend, path).is_dir(path)

    # -- changes -------------------------------------------------------------------
    def ensure_directory(self, path: PathLike, backend: BackendName) -> str:
        """Create the directory and its parents when missing; return the path."""
        return self.backend(backend, path).ensure_directory(path)

    def delete(self, path: PathLike, backend: BackendName, *, recursive: bool = False) -> None:
        """Remove a file, a link or an empty directory; with ``recursive=True`` also a directory tree."""
        self.backend(backend, path).delete(path, recursive=recursive)

    def copy(self, source: PathLike, destination: PathLike, backend: BackendName, *, overwrite: bool = False) -> str:
        """Copy a file or directory tree; an existing destination is replaced only with ``overwrite=True``."""
        return self.backend(backend, source).copy(source, destination, overwrite=overwrite)

    def move(self, source: PathLike, destination: PathLike, backend: BackendName, *, overwrite: bool = False) -> str:
        """Move a file or directory tree; on one filesystem this is a single atomic rename."""
        return self.backend(backend, source).move(source, destination, overwrite=overwrite)

    def mirror_directory_structure(
        self, source_dir: PathLike, target_dir: PathLike, backend: BackendName, recursive: bool = True
    ) -> list[str]:
        """Create under ``target_dir`` the directories found under ``source_dir`` (no files); return them."""
        store = self.backend(backend, source_dir)
        source = paths.normalize(source_dir, store.name)
        target = paths.normalize(target_dir, store.name)
        store._require_dir(source_dir)
        store.ensure_directory(target)
        created = []
        for sub in store.list_subdirectories(source, recursive=recursive):
            created.append(store.ensure_directory(paths.join(target, sub[len(source) :].lstrip("/"))))
        return created

    def mirror_directory(
        self,
        source_dir: PathLike,
        target_dir: PathLike,
        backend: BackendName,
        recursive: bool = True,
        overwrite_symlinks_only: bool = False,
    ) -> int:
        """Recreate ``source_dir``'s directories under ``target_dir`` and link each file there.

        An entry already in the target raises StorageFileExistsError, except that with
        ``overwrite_symlinks_only=True`` existing links are replaced and existing real files
        are left as they are. Returns the number of links made.
        """
        store = self.backend(backend, source_dir)
        source = paths.normalize(source_dir, store.name)
        target = paths.normalize(target_dir, store.name)
        self.mirror_directory_structure(source, target, backend, recursive)
        made = 0
        for file_path in store.list_files(source, recursive=recursive):
            link = paths.join(target, file_path[len(source) :].lstrip("/"))
            if overwrite_symlinks_only and store.exists(link):
                if not store.is_symlink(link):
                    continue
                store.symlink(file_path, link, overwrite=True)
            else:
                store.symlink(file_path, link, overwrite=False)
            made += 1
        return made
