"""Disk backend: real TIFF/.npy/text files, atomic writes, symlinks."""

from __future__ import annotations

import errno
import json
import os
import stat

import numpy as np
import pytest
import tifffile

import hcsgraph.io.disk as disk
from hcsgraph.io import StorageFileExistsError, UnsupportedDataError
from hcsgraph.io.disk import HCSGRAPH_TIFF_TAG, DiskStorageBackend
from hcsgraph.io.paths import TEMP_PREFIX
from hcsgraph.io.tiff import write_tiff_atomic


@pytest.fixture()
def store():
    return DiskStorageBackend()


def leftovers(directory):
    return [p for p in os.listdir(directory) if p.startswith(TEMP_PREFIX)]


def test_tiff_opens_in_tifffile_as_imagej_stack(store, tmp_path):
    stack = np.arange(3 * 8 * 10, dtype=np.uint16).reshape(3, 8, 10)
    store.save(stack, tmp_path / "stack.tif")
    with tifffile.TiffFile(tmp_path / "stack.tif") as tif:
        assert tif.is_imagej
        assert tif.imagej_metadata["images"] == 3
        np.testing.assert_array_equal(tif.asarray(), stack)


def test_bool_is_uint8_on_disk_and_bool_when_loaded(store, tmp_path):
    mask = np.zeros((5, 7), bool)
    mask[1:3, 2:5] = True
    store.save(mask, tmp_path / "mask.tiff")
    raw = tifffile.imread(tmp_path / "mask.tiff")
    assert raw.dtype == np.uint8 and set(np.unique(raw)) == {0, 1}
    with tifffile.TiffFile(tmp_path / "mask.tiff") as tif:
        assert json.loads(tif.pages[0].tags[HCSGRAPH_TIFF_TAG].value) == {"shape": [5, 7], "dtype": "|b1"}
    loaded = store.load(tmp_path / "mask.tiff")
    assert loaded.dtype == bool
    np.testing.assert_array_equal(loaded, mask)


def test_singleton_axes_and_other_dtypes_survive(store, tmp_path):
    for array in [np.ones((1, 6, 4), np.uint8), np.linspace(0, 1, 24).reshape(2, 3, 4), np.arange(12, dtype=np.int32).reshape(3, 4)]:
        store.save(array, tmp_path / "a.tif", overwrite=True)
        loaded = store.load(tmp_path / "a.tif")
        assert loaded.dtype == array.dtype and loaded.shape == array.shape
        np.testing.assert_array_equal(loaded, array)


def test_foreign_tiff_loads_as_written(store, tmp_path):
    image = np.arange(20, dtype=np.uint16).reshape(4, 5)
    tifffile.imwrite(tmp_path / "scope.tif", image)
    np.testing.assert_array_equal(store.load(tmp_path / "scope.tif"), image)


def test_npy_without_pickle(store, tmp_path):
    array = np.arange(10, dtype=np.float32).reshape(2, 5)
    store.save(array, tmp_path / "a.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy", allow_pickle=False), array)
    with pytest.raises(UnsupportedDataError, match="object arrays"):
        store.save(np.array([{"a": 1}], dtype=object), tmp_path / "b.npy")
    assert not (tmp_path / "b.npy").exists()


def test_text_files_are_plain(store, tmp_path):
    store.save("a,b\n1,2\n", tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text() == "a,b\n1,2\n"


@pytest.mark.parametrize(
    ("data", "name", "words"),
    [
        ({"a": 1}, "d.json", "dict"),
        (np.zeros((2, 2)), "img.png", ".png"),
        (np.zeros((2, 2)), "img", "without extension"),
        ("text", "img.tif", "text"),
    ],
)
def test_unsupported_data_names_type_path_and_backend(store, tmp_path, data, name, words):
    path = str(tmp_path / name)
    with pytest.raises(UnsupportedDataError) as info:
        store.save(data, path)
    message = str(info.value)
    assert words in message and path in message and "'disk'" in message
    assert isinstance(info.value, TypeError)
    assert not os.path.exists(path) and leftovers(tmp_path) == []


def test_writes_leave_no_temporary_files(store, tmp_path):
    for i in range(3):
        store.save(np.full((4, 4), i, np.uint8), tmp_path / f"img_{i}.tif")
    store.save("x", tmp_path / "t.txt")
    assert leftovers(tmp_path) == []


def test_failing_write_keeps_the_old_file(store, tmp_path, monkeypatch):
    path = tmp_path / "img.tif"
    old = np.full((4, 4), 7, np.uint16)
    store.save(old, path)

    def broken_writer(handle, array):
        handle.write(b"II*\x00partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(disk, "write_tiff", broken_writer)
    with pytest.raises(OSError, match="no space left on device") as info:
        store.save(np.zeros((4, 4), np.uint16), path, overwrite=True)
    assert info.value.errno == errno.ENOSPC and str(path) in str(info.value) and "'disk'" in str(info.value)
    monkeypatch.undo()
    np.testing.assert_array_equal(store.load(path), old)
    assert leftovers(tmp_path) == []


def test_failing_encoder_keeps_the_old_file_and_names_it(store, tmp_path, monkeypatch):
    path = tmp_path / "img.tif"
    store.save(np.full((4, 4), 7, np.uint16), path)
    old = path.read_bytes()

    def broken_writer(handle, array):
        handle.write(b"II*\x00" * 30000)
        raise ValueError("tifffile refused")

    monkeypatch.setattr(disk, "write_tiff", broken_writer)
    with pytest.raises(ValueError, match="tifffile refused") as info:
        store.save(np.zeros((4, 4), np.uint16), path, overwrite=True)
    assert any(str(path) in note for note in info.value.__notes__)
    assert path.read_bytes() == old and leftovers(tmp_path) == []


def old_write_tiff(path, array):
    """The disk backend's TIFF writer before hcsgraph.io.tiff: tifffile onto an open file."""
    stored = array.astype(np.uint8) if array.dtype == bool else np.ascontiguousarray(array)
    note = json.dumps({"shape": list(array.shape), "dtype": array.dtype.str})
    imagej = stored.dtype in {np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)} and 2 <= stored.ndim <= 5
    with open(path, "xb") as handle:
        tifffile.imwrite(handle, stored, imagej=imagej, photometric="minisblack", extratags=[(HCSGRAPH_TIFF_TAG, "s", 0, note, True)])


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(0).random((16, 24)) > 0.5,
        np.arange(3 * 16 * 24, dtype=np.uint16).reshape(3, 16, 24),
        np.linspace(0, 1, 2 * 3 * 5 * 7, dtype=np.float32).reshape(2, 3, 5, 7),
        np.arange(12, dtype=np.int32).reshape(3, 4),
        np.linspace(0, 1, 2**6 * 12).reshape(2, 2, 2, 2, 2, 2, 3, 4),
        np.ones((1, 6, 4), np.uint8),
        np.arange(512 * 512, dtype=np.uint16).reshape(512, 512)[::2, ::3],
        np.arange(40 * 300 * 300, dtype=np.uint16).reshape(40, 300, 300),
    ],
    ids=["bool", "uint16-3d", "float32-4d", "int32", "float64-8d", "uint8-singleton", "strided", "large"],
)
def test_write_tiff_atomic_matches_the_disk_backend_byte_for_byte(store, tmp_path, array):
    old_write_tiff(tmp_path / "old.tif", array)
    store.save(array, tmp_path / "backend.tif")
    write_tiff_atomic(tmp_path / "atomic.tif", array)
    expected = (tmp_path / "old.tif").read_bytes()
    assert (tmp_path / "backend.tif").read_bytes() == expected
    assert (tmp_path / "atomic.tif").read_bytes() == expected
    loaded = store.load(tmp_path / "atomic.tif")
    assert loaded.dtype == array.dtype and loaded.shape == array.shape
    np.testing.assert_array_equal(loaded, array)


def test_write_tiff_atomic_passes_tifffile_options(tmp_path):
    plane = np.arange(64, dtype=np.uint16).reshape(8, 8)
    write_tiff_atomic(tmp_path / "p.tif", plane, resolution=(2.0, 2.0), extratags=[(65000, "s", 0, "extra", True)])
    with tifffile.TiffFile(tmp_path / "p.tif") as tif:
        assert tif.is_imagej and tif.pages[0].tags[65000].value == "extra"
        assert HCSGRAPH_TIFF_TAG in tif.pages[0].tags
    np.testing.assert_array_equal(DiskStorageBackend().load(tmp_path / "p.tif"), plane)


def test_npy_is_what_numpy_writes(store, tmp_path):
    for i, array in enumerate([np.linspace(0, 1, 100_000).reshape(100, 1000), np.asfortranarray(np.ones((300, 70))), np.ones((50, 80))[:, ::3]]):
        np.save(tmp_path / f"numpy_{i}.npy", array, allow_pickle=False)
        store.save(array, tmp_path / f"disk_{i}.npy")
        assert (tmp_path / f"disk_{i}.npy").read_bytes() == (tmp_path / f"numpy_{i}.npy").read_bytes()


@pytest.fixture()
def umask():
    """Set the process umask for one test; restore it afterwards."""
    previous = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_created_files_and_directories_get_the_umask(store, tmp_path, umask, mask):
    umask(mask)
    store.save(np.ones((4, 4), np.uint8), tmp_path / "out" / "A01" / "img.tif")
    store.save("a,b\n", tmp_path / "out" / "A01" / "table.csv")
    store.ensure_directory(tmp_path / "made" / "deep")
    store.copy(tmp_path / "out" / "A01" / "img.tif", tmp_path / "copies" / "img.tif")
    store.move(tmp_path / "out" / "A01" / "table.csv", tmp_path / "moved" / "table.csv")
    for directory in ["out", "out/A01", "made", "made/deep", "copies", "moved"]:
        assert mode(tmp_path / directory) == 0o777 & ~mask, directory
    for file in ["out/A01/img.tif", "copies/img.tif", "moved/table.csv"]:
        assert mode(tmp_path / file) == 0o666 & ~mask, file


def test_overwrite_false_raises_and_keeps_content(store, tmp_path):
    store.save(b"first", tmp_path / "f.bin")
    with pytest.raises(StorageFileExistsError, match="overwrite=True"):
        store.save(b"second", tmp_path / "f.bin")
    assert (tmp_path / "f.bin").read_bytes() == b"first"


def test_move_is_a_rename(store, tmp_path):
    store.save(np.ones((3, 3), np.uint8), tmp_path / "a.tif")
    inode = os.stat(tmp_path / "a.tif").st_ino
    store.move(tmp_path / "a.tif", tmp_path / "out" / "b.tif")
    assert os.stat(tmp_path / "out" / "b.tif").st_ino == inode
    assert not (tmp_path / "a.tif").exists()


def test_mirror_directory_makes_symlinks(tmp_path):
    from hcsgraph.io import FileManager

    fm = FileManager()
    fm.save_array(np.ones((3, 3), np.uint8), str(tmp_path / "src" / "A01" / "s1.tif"), "disk")
    fm.save("note", str(tmp_path / "target" / "A01" / "s1.tif.txt"), "disk")
    fm.mirror_directory(str(tmp_path / "src"), str(tmp_path / "target"), "disk")
    link = tmp_path / "target" / "A01" / "s1.tif"
    assert link.is_symlink() and os.path.realpath(link) == str(tmp_path / "src" / "A01" / "s1.tif")
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "A01").mkdir()
    (tmp_path / "real" / "A01" / "s1.tif").write_bytes(b"keep")
    fm.mirror_directory(str(tmp_path / "src"), str(tmp_path / "real"), "disk", overwrite_symlinks_only=True)
    assert (tmp_path / "real" / "A01" / "s1.tif").read_bytes() == b"keep"
