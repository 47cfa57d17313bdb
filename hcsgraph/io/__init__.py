"""The VFS: one API over memory, disk (TIFF/.npy/text) and Zarr storage.

Use :class:`FileManager` with a :class:`~hcsgraph.config.Backend` (or its string value)::

    from hcsgraph.io import FileManager, storage_registry
    fm = FileManager(storage_registry)
    fm.save_array(image, "/out/A01/img_1.tif", "zarr")
"""

from hcsgraph.io.atomic import StorageWriteError
from hcsgraph.io.base import StorageBackend, StorageRegistry, storage_registry
from hcsgraph.io.errors import (
    PathEscapeError,
    StorageDirectoryNotEmptyError,
    StorageError,
    StorageFileExistsError,
    StorageFileNotFoundError,
    StorageIsADirectoryError,
    StorageNotADirectoryError,
    StorageReadError,
    UnknownBackendError,
    UnsupportedDataError,
)
from hcsgraph.io.filemanager import IMAGE_EXTENSIONS, FileManager

__all__ = [
    "IMAGE_EXTENSIONS",
    "FileManager",
    "PathEscapeError",
    "StorageBackend",
    "StorageDirectoryNotEmptyError",
    "StorageError",
    "StorageFileExistsError",
    "StorageFileNotFoundError",
    "StorageIsADirectoryError",
    "StorageNotADirectoryError",
    "StorageReadError",
    "StorageRegistry",
    "StorageWriteError",
    "UnknownBackendError",
    "UnsupportedDataError",
    "storage_registry",
]
