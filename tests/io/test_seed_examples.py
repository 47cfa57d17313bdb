"""The documented "Common Operations", written with hcsgraph's names."""

from __future__ import annotations

import numpy as np

from hcsgraph.config import Backend
from hcsgraph.io.base import storage_registry
from hcsgraph.io.filemanager import FileManager


def test_common_operations(tmp_path):
    filemanager = FileManager(storage_registry)
    images = tmp_path / "images"
    for name in ["w1/img_10.tif", "w1/img_2.tif", "w2/img_1.tiff", "notes.txt"]:
        data = "n" if name.endswith(".txt") else np.zeros((4, 4), np.uint16)
        filemanager.save(data, str(images / name), Backend.DISK.value)

    # File listing
    image_files = filemanager.list_image_files(
        directory=str(images), backend=Backend.DISK.value, extensions={".tif", ".tiff"}, recursive=True
    )
    assert image_files == [str(images / n) for n in ["w1/img_2.tif", "w1/img_10.tif", "w2/img_1.tiff"]]
    files = filemanager.list_files(directory=str(images / "w1"), backend=Backend.DISK.value, pattern="*.tif")
    assert files == [str(images / "w1/img_2.tif"), str(images / "w1/img_10.tif")]

    # Array operations
    array = np.random.rand(100, 100)
    filemanager.save_array(array, "/memory/temp_array", Backend.MEMORY.value)
    filemanager.save_array(array, str(tmp_path / "disk/persistent_array.tif"), Backend.DISK.value)
    large_array = np.random.rand(300, 300)
    filemanager.save_array(large_array, str(tmp_path / "zarr/large_dataset"), Backend.ZARR.value)
    np.testing.assert_array_equal(filemanager.load_array("/memory/temp_array", Backend.MEMORY.value), array)
    np.testing.assert_array_equal(filemanager.load_array(str(tmp_path / "disk/persistent_array.tif"), Backend.DISK.value), array)
    np.testing.assert_array_equal(filemanager.load_array(str(tmp_path / "zarr/large_dataset"), Backend.ZARR.value), large_array)
    filemanager.delete("/memory/temp_array", Backend.MEMORY.value)

    # Directory operations
    filemanager.ensure_directory(str(tmp_path / "new/dir"), Backend.DISK.value)
    assert filemanager.exists(str(tmp_path / "disk/persistent_array.tif"), Backend.DISK.value)
    assert filemanager.is_dir(str(tmp_path / "new/dir"), Backend.DISK.value)
    filemanager.mirror_directory_structure(
        source_dir=str(images), target_dir=str(tmp_path / "target"), backend=Backend.DISK.value, recursive=True
    )
    assert (tmp_path / "target/w1").is_dir() and (tmp_path / "target/w2").is_dir()

    # Backend registry
    backends = storage_registry.get_available_backends()
    assert set(backends) == {"memory", "disk", "zarr", "fsspec"}
    disk_backend = storage_registry.get_backend("disk")
    memory_backend = storage_registry.get_backend("memory")
    zarr_backend = storage_registry.get_backend("zarr")
    assert (disk_backend.name, memory_backend.name, zarr_backend.name) == ("disk", "memory", "zarr")
