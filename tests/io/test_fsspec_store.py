"""The URL store (``"fsspec"``) against a real S3 API (moto's server): the same conformance tests as
every other store, plus what only object stores need checked."""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import pytest

from hcsgraph.io import (
    FileManager,
    PathEscapeError,
    StorageError,
    StorageIsADirectoryError,
    StorageRegistry,
    location,
    storage_registry,
)
from hcsgraph.io.disk import DiskStorageBackend
from hcsgraph.io.fsspec_store import LINK_MAGIC, FsspecStorageBackend
from tests.io.test_conformance import BackendConformance, make_array
from tests.s3server import unique_prefix


class UrlBackend(StrEnum):
    FSSPEC = "fsspec"


class TestFsspecBackend(BackendConformance):
    name = UrlBackend.FSSPEC

    @pytest.fixture()
    def backend(self, s3_storage_options):
        return FsspecStorageBackend(storage_options=s3_storage_options)

    @pytest.fixture()
    def base(self, s3_storage_options):
        return unique_prefix("vfs")


SECRET = "hunter2-SECRET-value-9b1f"


def test_registered_and_never_shows_credentials(s3_endpoint):
    assert isinstance(storage_registry.get_backend("fsspec"), FsspecStorageBackend)
    backend = FsspecStorageBackend(storage_options={"client_kwargs": {"endpoint_url": s3_endpoint},
                                                    "key": "AKIDEXAMPLEKEY77", "secret": SECRET})
    assert SECRET not in repr(backend) and "AKIDEXAMPLEKEY77" not in repr(backend) and s3_endpoint in repr(backend)
    with pytest.raises(Exception) as info:
        backend.load(f"{unique_prefix('x')}/missing.tif")
    assert SECRET not in str(info.value) and "'fsspec'" in str(info.value)


def test_urls_and_local_paths_go_to_their_own_backends(tmp_path, s3_storage_options):
    image = make_array(np.uint16, (4, 4))
    with pytest.raises(StorageError, match="keeps data at URLs"):
        FsspecStorageBackend(storage_options=s3_storage_options).save(image, str(tmp_path / "x.tif"))
    with pytest.raises(StorageError, match="'fsspec'") as info:
        DiskStorageBackend().save(image, "s3://k:s@bucket/x.tif")
    assert "k:s@" not in str(info.value)


def test_files_are_byte_for_byte_the_disk_backends(tmp_path, s3_storage_options):
    url_store = FsspecStorageBackend(storage_options=s3_storage_options)
    base = unique_prefix("bytes")
    items = {"img.tif": make_array(np.uint16, (3, 16, 24)), "mask.tif": make_array(np.bool_, (8, 8)),
             "stack.npy": make_array(np.float32, (2, 5)), "table.csv": "a,b\n1,2\n", "raw.bin": b"\x00\x01"}
    for name, data in items.items():
        DiskStorageBackend().save(data, str(tmp_path / name))
        url_store.save(data, f"{base}/{name}")
        assert location.read_bytes(f"{base}/{name}", s3_storage_options) == (tmp_path / name).read_bytes()


def test_rooted_store_resolves_relative_paths_and_refuses_escapes(s3_storage_options):
    base = unique_prefix("root")
    store = FsspecStorageBackend(root=base, storage_options=s3_storage_options)
    store.save(np.ones((2, 2), np.uint8), "A01/img.tif")
    assert store.list_files("A01") == ["A01/img.tif"]
    assert store.is_file(f"{base}/A01/img.tif")
    for bad in ["../x.tif", "A01/../../x.tif", "s3://hcsgraph-test/elsewhere.tif", "/abs/x.tif"]:
        with pytest.raises(PathEscapeError, match="root"):
            store.save(np.ones((2, 2), np.uint8), bad)


def test_listings_and_batches_cost_one_request_per_folder(s3_server, s3_storage_options):
    fm = FileManager(StorageRegistry({"fsspec": FsspecStorageBackend(storage_options=s3_storage_options)}))
    base = unique_prefix("batch")
    paths = [f"{base}/plate/{well}/s{site}.tif" for well in ("A01", "A02") for site in range(1, 5)]
    images = [make_array(np.uint16, (8, 8), i) for i in range(len(paths))]
    mark = s3_server.count()
    fm.save_batch(images, paths, "fsspec")
    requests = s3_server.since(mark)
    assert sorted(r[0] for r in requests) == ["GET"] * 2 + ["PUT"] * len(paths), requests  # a listing per folder
    mark = s3_server.count()
    assert fm.list_image_files(f"{base}/plate", "fsspec", recursive=True) == paths
    assert len(s3_server.since(mark)) == 1
    mark = s3_server.count()
    loaded = fm.load_batch(paths, "fsspec")
    assert [r[0] for r in s3_server.since(mark)] == ["GET"] * len(paths)
    for got, want in zip(loaded, images, strict=True):
        np.testing.assert_array_equal(got, want)


def test_links_are_small_objects_that_load_as_their_target(s3_storage_options):
    store = FsspecStorageBackend(storage_options=s3_storage_options)
    base = unique_prefix("links")
    image = make_array(np.uint16, (4, 4))
    store.save(image, f"{base}/a.tif")
    store.symlink(f"{base}/a.tif", f"{base}/link.tif")
    raw = location.read_bytes(f"{base}/link.tif", s3_storage_options)
    assert raw == LINK_MAGIC + f"{base}/a.tif".encode()
    assert store.is_symlink(f"{base}/link.tif") and not store.is_symlink(f"{base}/a.tif")
    np.testing.assert_array_equal(store.load(f"{base}/link.tif"), image)
    store.delete(f"{base}/a.tif")
    with pytest.raises(FileNotFoundError, match="link target"):
        store.load(f"{base}/link.tif")


def test_empty_directories_exist_through_markers(s3_storage_options):
    store = FsspecStorageBackend(storage_options=s3_storage_options)
    base = unique_prefix("dirs")
    store.ensure_directory(f"{base}/out/empty")
    assert store.is_dir(f"{base}/out/empty") and store.list_dir(f"{base}/out") == ["empty"]
    assert store.list_files(f"{base}/out", recursive=True) == [] and store.list_dir(f"{base}/out/empty") == []
    with pytest.raises(StorageIsADirectoryError):
        store.save(b"x", f"{base}/out/empty")
    store.delete(f"{base}/out/empty")
    assert not store.exists(f"{base}/out/empty")


def test_registry_for_urls_lets_disk_code_write_to_urls(s3_storage_options):
    from hcsgraph.io.fsspec_store import registry_for_urls

    fm = FileManager(registry_for_urls(s3_storage_options))
    base = unique_prefix("materialize")
    fm.ensure_directory(f"{base}/cell_counts", "disk")
    fm.save("well,count\nA01,3\n", f"{base}/cell_counts/A01.csv", "disk", overwrite=True)
    assert fm.load(f"{base}/cell_counts/A01.csv", "fsspec") == "well,count\nA01,3\n"
    assert fm.backend("memory") is storage_registry.get_backend("memory")
