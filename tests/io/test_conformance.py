"""One set of behaviours, checked against every storage backend.

Each backend's class subclasses :class:`BackendConformance` and provides the ``backend``
fixture; every backend gets a fresh instance registered in a private registry.
"""

from __future__ import annotations

import numpy as np
import pytest

from hcsgraph.config import Backend
from hcsgraph.io import (
    FileManager,
    PathEscapeError,
    StorageDirectoryNotEmptyError,
    StorageFileExistsError,
    StorageFileNotFoundError,
    StorageRegistry,
)
from hcsgraph.io.disk import DiskStorageBackend
from hcsgraph.io.memory import MemoryStorageBackend
from hcsgraph.io.zarr import ZarrStorageBackend

DTYPES = [np.uint8, np.uint16, np.float32, np.bool_]
SHAPES = [(16, 24), (3, 16, 24)]


def make_array(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.bool_:
        return rng.random(shape) > 0.5
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype)


class BackendConformance:
    """Behaviour every backend must have. Subclasses define the ``backend`` fixture."""

    name: Backend

    @pytest.fixture()
    def fm(self, backend):
        return FileManager(StorageRegistry({self.name.value: backend}))

    @pytest.fixture()
    def base(self, tmp_path):
        return str(tmp_path / "vfs")

    @pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
    @pytest.mark.parametrize("shape", SHAPES, ids=["2d", "3d"])
    def test_array_round_trip_is_exact(self, fm, base, dtype, shape):
        array = make_array(dtype, shape)
        path = f"{base}/A01/img_1.tif"
        fm.save_array(array, path, self.name)
        loaded = fm.load_array(path, self.name.value)
        assert loaded.dtype == array.dtype
        assert loaded.shape == array.shape
        np.testing.assert_array_equal(loaded, array)

    def test_text_and_bytes_round_trip(self, fm, base):
        text = "well,count\nA01,12\r\nB02,7 µm\n"
        blob = bytes(range(256))
        fm.save(text, f"{base}/counts.csv", self.name)
        fm.save('{"a": 1}', f"{base}/meta.json", self.name)
        fm.save(blob, f"{base}/raw.bin", self.name)
        assert fm.load(f"{base}/counts.csv", self.name) == text
        assert fm.load(f"{base}/meta.json", self.name) == '{"a": 1}'
        assert fm.load(f"{base}/raw.bin", self.name) == blob

    def test_existing_file_is_kept_without_overwrite(self, fm, base):
        path = f"{base}/img.tif"
        first, second = make_array(np.uint16, (8, 8), 1), make_array(np.uint16, (8, 8), 2)
        fm.save_array(first, path, self.name)
        with pytest.raises(StorageFileExistsError) as info:
            fm.save_array(second, path, self.name)
        assert path in str(info.value) and self.name.value in str(info.value)
        np.testing.assert_array_equal(fm.load_array(path, self.name), first)
        fm.save_array(second, path, self.name, overwrite=True)
        np.testing.assert_array_equal(fm.load_array(path, self.name), second)

    def test_batch_round_trip(self, fm, base):
        arrays = [make_array(np.uint16, (8, 8), i) for i in range(5)]
        paths = [f"{base}/batch/img_{i}.tif" for i in range(5)]
        assert fm.save_batch(arrays, paths, self.name) == paths
        for loaded, array in zip(fm.load_batch(paths, self.name), arrays, strict=True):
            np.testing.assert_array_equal(loaded, array)

    def test_batch_checks_every_path_before_writing(self, fm, base):
        fm.save_array(make_array(np.uint8, (4, 4)), f"{base}/b/img_2.tif", self.name)
        arrays = [make_array(np.uint8, (4, 4), i) for i in range(3)]
        with pytest.raises(StorageFileExistsError):
            fm.save_batch(arrays, [f"{base}/b/img_{i}.tif" for i in range(1, 4)], self.name)
        assert fm.list_files(f"{base}/b", self.name) == [f"{base}/b/img_2.tif"]

    def test_listing_is_natural_filtered_and_recursive(self, fm, base):
        image = make_array(np.uint8, (4, 4))
        for name in ["img_10.tif", "img_2.tif", "img_1.TIF", "notes.txt", "sub/img_3.tif", "sub/deep/img_4.tif"]:
            data = "x" if name.endswith(".txt") else image
            fm.save(data, f"{base}/plate/{name}", self.name)
        plate = f"{base}/plate"
        assert fm.list_files(plate, self.name) == [f"{plate}/{n}" for n in ["img_1.TIF", "img_2.tif", "img_10.tif", "notes.txt"]]
        assert fm.list_files(plate, self.name, pattern="*.tif") == [f"{plate}/img_2.tif", f"{plate}/img_10.tif"]
        assert fm.list_files(plate, self.name, extensions={"tif"}) == [f"{plate}/img_1.TIF", f"{plate}/img_2.tif", f"{plate}/img_10.tif"]
        assert fm.list_image_files(plate, self.name, recursive=True) == [
            f"{plate}/img_1.TIF",
            f"{plate}/img_2.tif",
            f"{plate}/img_10.tif",
            f"{plate}/sub/deep/img_4.tif",
            f"{plate}/sub/img_3.tif",
        ]
        assert fm.list_dir(plate, self.name) == ["img_1.TIF", "img_2.tif", "img_10.tif", "notes.txt", "sub"]

    def test_queries_and_directories(self, fm, base):
        fm.save_array(make_array(np.uint8, (4, 4)), f"{base}/d/img.tif", self.name)
        assert fm.exists(f"{base}/d/img.tif", self.name) and fm.is_file(f"{base}/d/img.tif", self.name)
        assert not fm.is_dir(f"{base}/d/img.tif", self.name)
        assert fm.is_dir(f"{base}/d", self.name) and not fm.is_file(f"{base}/d", self.name)
        assert not fm.exists(f"{base}/nothing", self.name)
        fm.ensure_directory(f"{base}/new/dir", self.name)
        fm.ensure_directory(f"{base}/new/dir", self.name)
        assert fm.is_dir(f"{base}/new/dir", self.name)
        assert fm.list_files(f"{base}/new", self.name, recursive=True) == []

    def test_delete(self, fm, base):
        fm.save_array(make_array(np.uint8, (4, 4)), f"{base}/del/img.tif", self.name)
        with pytest.raises(StorageDirectoryNotEmptyError):
            fm.delete(f"{base}/del", self.name)
        fm.delete(f"{base}/del/img.tif", self.name)
        assert not fm.exists(f"{base}/del/img.tif", self.name)
        fm.save_array(make_array(np.uint8, (4, 4)), f"{base}/del/sub/img.tif", self.name)
        fm.delete(f"{base}/del", self.name, recursive=True)
        assert not fm.exists(f"{base}/del", self.name)
        with pytest.raises(StorageFileNotFoundError):
            fm.delete(f"{base}/del", self.name)

    def test_copy_and_move(self, fm, base):
        array = make_array(np.uint16, (6, 6))
        fm.save_array(array, f"{base}/src/a.tif", self.name)
        fm.copy(f"{base}/src/a.tif", f"{base}/dst/a.tif", self.name)
        np.testing.assert_array_equal(fm.load_array(f"{base}/dst/a.tif", self.name), array)
        with pytest.raises(StorageFileExistsError):
            fm.copy(f"{base}/src/a.tif", f"{base}/dst/a.tif", self.name)
        fm.move(f"{base}/src/a.tif", f"{base}/moved/b.tif", self.name)
        assert not fm.exists(f"{base}/src/a.tif", self.name)
        np.testing.assert_array_equal(fm.load_array(f"{base}/moved/b.tif", self.name), array)
        fm.copy(f"{base}/moved", f"{base}/tree", self.name)
        assert fm.list_files(f"{base}/tree", self.name) == [f"{base}/tree/b.tif"]
        other = make_array(np.uint16, (6, 6), 9)
        fm.save_array(other, f"{base}/x.tif", self.name)
        with pytest.raises(StorageFileExistsError):
            fm.move(f"{base}/x.tif", f"{base}/tree/b.tif", self.name)
        fm.move(f"{base}/x.tif", f"{base}/tree/b.tif", self.name, overwrite=True)
        np.testing.assert_array_equal(fm.load_array(f"{base}/tree/b.tif", self.name), other)

    def test_mirror_directory_structure_and_links(self, fm, base):
        array = make_array(np.uint8, (4, 4))
        for name in ["A01/s1.tif", "A01/s2.tif", "B02/deep/s1.tif"]:
            fm.save_array(array, f"{base}/in/{name}", self.name)
        made = fm.mirror_directory_structure(f"{base}/in", f"{base}/skeleton", self.name, recursive=True)
        assert sorted(made) == [f"{base}/skeleton/A01", f"{base}/skeleton/B02", f"{base}/skeleton/B02/deep"]
        assert fm.list_files(f"{base}/skeleton", self.name, recursive=True) == []
        assert fm.mirror_directory(f"{base}/in", f"{base}/linked", self.name) == 3
        assert fm.list_files(f"{base}/linked", self.name, recursive=True) == [
            f"{base}/linked/A01/s1.tif",
            f"{base}/linked/A01/s2.tif",
            f"{base}/linked/B02/deep/s1.tif",
        ]
        np.testing.assert_array_equal(fm.load_array(f"{base}/linked/B02/deep/s1.tif", self.name), array)
        with pytest.raises(StorageFileExistsError):
            fm.mirror_directory(f"{base}/in", f"{base}/linked", self.name)
        assert fm.mirror_directory(f"{base}/in", f"{base}/linked", self.name, overwrite_symlinks_only=True) == 3

    def test_missing_file_names_path_and_backend(self, fm, base):
        path = f"{base}/missing/img.tif"
        with pytest.raises(StorageFileNotFoundError) as info:
            fm.load(path, self.name)
        assert isinstance(info.value, FileNotFoundError)
        assert path in str(info.value) and repr(self.name.value) in str(info.value)
        with pytest.raises(StorageFileNotFoundError):
            fm.list_files(f"{base}/missing", self.name)

    def test_parent_escape_is_refused(self, fm, base):
        path = f"{base}/a/../../outside.tif"
        with pytest.raises(PathEscapeError) as info:
            fm.save_array(make_array(np.uint8, (2, 2)), path, self.name)
        assert path in str(info.value) and self.name.value in str(info.value)
        assert isinstance(info.value, ValueError)


class TestMemoryBackend(BackendConformance):
    name = Backend.MEMORY

    @pytest.fixture()
    def backend(self):
        return MemoryStorageBackend()


class TestDiskBackend(BackendConformance):
    name = Backend.DISK

    @pytest.fixture()
    def backend(self):
        return DiskStorageBackend()


class TestZarrBackend(BackendConformance):
    name = Backend.ZARR

    @pytest.fixture()
    def backend(self):
        return ZarrStorageBackend()


@pytest.mark.parametrize("cls", [MemoryStorageBackend, DiskStorageBackend, ZarrStorageBackend])
def test_rooted_backend_resolves_relative_paths_and_refuses_escapes(cls, tmp_path):
    backend = cls(root=tmp_path / "root")
    backend.save(np.ones((2, 2), np.uint8), "A01/img.tif")
    assert backend.is_file(f"{tmp_path}/root/A01/img.tif")
    assert backend.list_files("A01") == ["A01/img.tif"]
    for bad in ["../x.tif", "A01/../../x.tif", str(tmp_path / "elsewhere.tif")]:
        with pytest.raises(PathEscapeError, match="root"):
            backend.save(np.ones((2, 2), np.uint8), bad)
    assert not (tmp_path / "x.tif").exists() and not (tmp_path / "elsewhere.tif").exists()


def test_same_saved_paths_list_the_same_in_every_backend(tmp_path):
    names = ["w/A01/f10.tif", "w/A01/f2.tif", "w/A01/f1.npy", "w/B01/f1.tif", "w/table.csv", "w/raw.bin"]
    listings = {}
    for backend in Backend:
        fm = FileManager(
            StorageRegistry({"memory": MemoryStorageBackend(), "disk": DiskStorageBackend(), "zarr": ZarrStorageBackend()})
        )
        base = str(tmp_path / backend.value)
        for name in names:
            data = "a,b\n" if name.endswith(".csv") else b"\x00" if name.endswith(".bin") else np.zeros((2, 2), np.uint16)
            fm.save(data, f"{base}/{name}", backend)
        listing = fm.list_files(f"{base}/w", backend, recursive=True)
        images = fm.list_image_files(f"{base}/w", backend, recursive=True)
        listings[backend] = ([p[len(base):] for p in listing], [p[len(base):] for p in images])
    assert listings[Backend.MEMORY] == listings[Backend.DISK] == listings[Backend.ZARR]
    assert listings[Backend.DISK][1] == ["/w/A01/f1.npy", "/w/A01/f2.tif", "/w/A01/f10.tif", "/w/B01/f1.tif"]
