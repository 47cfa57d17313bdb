"""The disk backend and the TIFF writer on a real full disk (a 1 MiB tmpfs)."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from hcsgraph.io import FileManager, StorageError
from hcsgraph.io.disk import DiskStorageBackend
from hcsgraph.io.paths import is_temporary
from hcsgraph.io.tiff import write_tiff_atomic
from tests.fulldisk import FILLER, fill, free_bytes, mounted_tmpfs

CASES = {
    "tif": (np.full((64, 64), 7, np.uint16), np.arange(128 * 128, dtype=np.uint16).reshape(128, 128)),
    "npy": (np.full((8, 8), 3.0), np.linspace(0, 1, 128 * 128)),
    "txt": ("old text\n", "new text " * 4000),
}


@pytest.fixture()
def small_disk(tmp_path):
    with mounted_tmpfs(tmp_path / "tmpfs") as mount:
        yield mount


def assert_no_space(info: pytest.ExceptionInfo, shown: str) -> None:
    error = info.value
    assert error.errno == errno.ENOSPC
    assert "no space left on device" in str(error)
    assert shown in str(error)


@pytest.mark.parametrize("ext", sorted(CASES))
@pytest.mark.parametrize("leave", [0, 16 * 1024], ids=["full", "nearly-full"])
def test_save_on_a_full_disk_names_the_file_and_keeps_the_old_one(small_disk, ext, leave):
    store = DiskStorageBackend()
    old, new = CASES[ext]
    path = small_disk / f"plate/img.{ext}"
    store.save(old, path)
    old_bytes = path.read_bytes()
    fill(small_disk, leave=leave)

    for target, overwrite in [(path, True), (small_disk / f"plate/other.{ext}", False)]:
        with pytest.raises(OSError) as info:
            store.save(new, target, overwrite=overwrite)
        assert_no_space(info, str(target))
        assert isinstance(info.value, StorageError) and "'disk'" in str(info.value)

    assert sorted(os.listdir(small_disk / "plate")) == [f"img.{ext}"]
    assert not [n for n in os.listdir(small_disk) if is_temporary(n)]
    assert path.read_bytes() == old_bytes
    assert free_bytes(small_disk) >= leave


def test_rooted_backend_names_the_vfs_path(small_disk):
    fill(small_disk)
    store = DiskStorageBackend(root=small_disk)
    with pytest.raises(OSError) as info:
        store.save(np.ones((32, 32), np.uint8), "A01/img.tif")
    assert_no_space(info, "A01/img.tif")
    assert info.value.filename == f"{small_disk}/A01/img.tif"
    assert os.listdir(small_disk / "A01") == []


def test_filemanager_save_batch_on_a_full_disk(small_disk):
    fm = FileManager()
    fill(small_disk, leave=8 * 1024)
    planes = [np.full((64, 64), i, np.uint16) for i in range(3)]
    paths = [str(small_disk / f"w/img_{i}.tif") for i in range(3)]
    with pytest.raises(OSError) as info:
        fm.save_batch(planes, paths, "disk")
    assert info.value.errno == errno.ENOSPC and "no space left on device" in str(info.value)
    assert not [n for n in os.listdir(small_disk / "w") if is_temporary(n)]


def test_copy_onto_a_full_disk_keeps_the_destination(small_disk, tmp_path):
    store = DiskStorageBackend()
    source = tmp_path / "source.bin"
    source.write_bytes(b"x" * 200_000)
    target = small_disk / "copy.bin"
    target.write_bytes(b"old")
    fill(small_disk)
    with pytest.raises(OSError) as info:
        store.copy(source, target, overwrite=True)
    assert_no_space(info, str(target))
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(small_disk)) == sorted([FILLER, "copy.bin"])


def test_tree_copy_and_cross_device_move_onto_a_full_disk(small_disk, tmp_path):
    store = DiskStorageBackend()
    for i in range(3):
        store.save(np.full((100, 100), i, np.uint16), tmp_path / "well" / f"img_{i}.tif")
    fill(small_disk, leave=8 * 1024)
    target = small_disk / "plate" / "well"
    for transfer in [store.copy, store.move]:  # the move crosses filesystems: a copy, then a delete
        with pytest.raises(OSError) as info:
            transfer(tmp_path / "well", target)
        assert_no_space(info, str(target))
        assert os.listdir(small_disk / "plate") == []
        assert len(os.listdir(tmp_path / "well")) == 3


@pytest.mark.parametrize("leave", [0, 16 * 1024], ids=["full", "nearly-full"])
def test_write_tiff_atomic_on_a_full_disk(small_disk, leave):
    path = small_disk / "plane.tif"
    write_tiff_atomic(path, np.ones((16, 16), np.uint16))
    old_bytes = path.read_bytes()
    fill(small_disk, leave=leave)
    with pytest.raises(OSError) as info:
        write_tiff_atomic(path, np.zeros((200, 200), np.uint16))
    assert_no_space(info, str(path))
    assert path.read_bytes() == old_bytes
    assert sorted(os.listdir(small_disk)) == sorted([FILLER, "plane.tif"])
