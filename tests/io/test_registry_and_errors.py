"""The storage registry and the error contract."""

from __future__ import annotations

import numpy as np
import pytest

from hcsgraph.config import Backend
from hcsgraph.io import (
    FileManager,
    PathEscapeError,
    StorageError,
    StorageRegistry,
    UnknownBackendError,
    UnsupportedDataError,
    storage_registry,
)
from hcsgraph.io.disk import DiskStorageBackend
from hcsgraph.io.memory import MemoryStorageBackend
from hcsgraph.io.zarr import ZarrStorageBackend


def test_global_registry_has_the_three_backends():
    assert storage_registry.get_available_backends() == ["memory", "disk", "zarr", "fsspec"]
    assert isinstance(storage_registry.get_backend("disk"), DiskStorageBackend)
    assert isinstance(storage_registry.get_backend(Backend.MEMORY), MemoryStorageBackend)
    assert storage_registry.get_backend("zarr") is storage_registry.get_backend(Backend.ZARR)
    assert isinstance(storage_registry.get_backend("zarr"), ZarrStorageBackend)


def test_register_instance_and_lazy_path():
    registry = StorageRegistry()
    scratch = MemoryStorageBackend()
    registry.register("scratch", scratch)
    registry.register("lazy", "hcsgraph.io.memory:MemoryStorageBackend")
    assert registry.get_backend("scratch") is scratch
    assert isinstance(registry.get_backend("lazy"), MemoryStorageBackend)
    with pytest.raises(TypeError):
        registry.register("bad", object())


def test_missing_library_gives_install_hint():
    registry = StorageRegistry()
    registry.register("s3", "hcsgraph_no_such_module:Store", install_hint="pip install hcsgraph-s3")
    with pytest.raises(UnknownBackendError, match="pip install hcsgraph-s3"):
        registry.get_backend("s3")
    assert registry.get_available_backends() == []


def test_unknown_backend_names_path_and_backend():
    fm = FileManager()
    with pytest.raises(UnknownBackendError) as info:
        fm.load("/data/img.tif", "tape")
    message = str(info.value)
    assert "/data/img.tif" in message and "'tape'" in message and "'disk'" in message
    assert isinstance(info.value, KeyError) and isinstance(info.value, StorageError)


@pytest.mark.parametrize("backend", ["disk", "zarr"])
def test_unsupported_data(backend, tmp_path):
    path = str(tmp_path / "obj.tif")
    with pytest.raises(UnsupportedDataError) as info:
        FileManager().save({"a": 1}, path, backend)
    assert path in str(info.value) and repr(backend) in str(info.value)


def test_save_array_rejects_non_arrays():
    with pytest.raises(UnsupportedDataError, match="expects an array"):
        FileManager().save_array("text", "/memory/x", "memory")


@pytest.mark.parametrize("backend", ["memory", "disk", "zarr"])
def test_dotdot_is_refused_and_nothing_written(backend, tmp_path):
    path = str(tmp_path / "a" / ".." / "b.tif")
    with pytest.raises(PathEscapeError) as info:
        FileManager().save(np.zeros((2, 2), np.uint8), path, backend)
    assert path in str(info.value) and repr(backend) in str(info.value)
    assert not (tmp_path / "b.tif").exists()
