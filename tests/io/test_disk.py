"""Disk backend: real TIFF/.npy/text files, atomic writes, symlinks."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tifffile

import hcsgraph.io.disk as disk
from hcsgraph.io import StorageFileExistsError, UnsupportedDataError
from hcsgraph.io.disk import HCSGRAPH_TIFF_TAG, DiskStorageBackend
from hcsgraph.io.paths import TEMP_PREFIX


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
    with pytest.raises(OSError, match="No space left"):
        store.save(np.zeros((4, 4), np.uint16), path, overwrite=True)
    monkeypatch.undo()
    np.testing.assert_array_equal(store.load(path), old)
    assert leftovers(tmp_path) == []


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
