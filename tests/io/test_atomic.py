"""hcsgraph.io.atomic: temp file, fsync, rename; errors that name the file; nothing left behind."""

from __future__ import annotations

import errno
import json
import os
import pickle
import stat
import subprocess

import numpy as np
import pytest
import tifffile

import hcsgraph.io.atomic as atomic
from hcsgraph.io import StorageError
from hcsgraph.io.atomic import (
    StorageWriteError,
    atomic_path,
    write_bytes_atomic,
    write_error,
    write_json_atomic,
    write_text_atomic,
)
from hcsgraph.io.paths import TEMP_PREFIX, is_temporary
from tests.fulldisk import FILLER, fill, free_bytes, mounted_tmpfs


@pytest.fixture()
def small_disk(tmp_path):
    with mounted_tmpfs(tmp_path / "tmpfs") as mount:
        yield mount


@pytest.fixture()
def umask():
    """Set the process umask for one test; restore it afterwards."""
    previous = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def temporaries(directory) -> list[str]:
    return [name for name in os.listdir(directory) if is_temporary(name)]


def test_writes_replace_the_file_and_leave_nothing(tmp_path):
    path = tmp_path / "a" / "b.json"
    write_json_atomic(path, {"b": 1, "a": [1, 2], "when": np.datetime64("2024-01-02")})
    assert path.read_text() == json.dumps({"a": [1, 2], "b": 1, "when": "2024-01-02"}, indent=2)
    write_text_atomic(path, "line\r\nµm\n")
    assert path.read_bytes() == "line\r\nµm\n".encode()
    write_bytes_atomic(path, bytes(range(256)))
    assert path.read_bytes() == bytes(range(256))
    assert os.listdir(tmp_path / "a") == ["b.json"]


def test_json_is_what_the_pipeline_wrote_before(tmp_path):
    payload = {"well": "A01", "status": "complete", "planes": 3, "extra": {"z": 1, "a": object}}
    write_json_atomic(tmp_path / "m.json", payload)
    with open(tmp_path / "old.json", "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=2, sort_keys=True, default=str)
    assert (tmp_path / "m.json").read_bytes() == (tmp_path / "old.json").read_bytes()


def test_the_file_is_synced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    write_bytes_atomic(tmp_path / "f.bin", b"data")
    with atomic_path(tmp_path / "g.bin") as tmp:
        with open(tmp, "wb") as fh:
            fh.write(b"data")
    assert events == ["fsync", "replace", "fsync", "replace"]


def test_a_failing_fsync_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "f.txt"
    path.write_text("old")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError) as info:
        write_text_atomic(path, "new")
    assert info.value.errno == errno.ENOSPC and str(path) in str(info.value)
    assert "no space left on device" in str(info.value)
    assert path.read_text() == "old" and temporaries(tmp_path) == []


def test_any_exception_removes_the_temporary_file(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def broken(handle):
        handle.write(b"partial" * 20000)
        raise ValueError("encoder bug")

    with pytest.raises(ValueError, match="encoder bug") as info:
        atomic.write_atomic(path, broken)
    assert any(str(path) in note for note in info.value.__notes__)
    with pytest.raises(KeyError):
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"partial")
            raise KeyError("stop")
    assert path.read_bytes() == b"old" and temporaries(tmp_path) == []


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_files_and_parents_get_the_umask(tmp_path, umask, mask):
    umask(mask)
    write_bytes_atomic(tmp_path / "new" / "deep" / "f.bin", b"x")
    with atomic_path(tmp_path / "g.tif") as tmp:
        assert os.path.basename(tmp).startswith(TEMP_PREFIX) and os.path.dirname(tmp) == str(tmp_path)
        assert mode(tmp) == 0o666 & ~mask
        tifffile.imwrite(tmp, np.zeros((4, 4), np.uint8))
    assert mode(tmp_path / "new" / "deep" / "f.bin") == 0o666 & ~mask
    assert mode(tmp_path / "g.tif") == 0o666 & ~mask
    assert mode(tmp_path / "new") == mode(tmp_path / "new" / "deep") == 0o777 & ~mask


def test_a_read_only_filesystem_names_the_destination(small_disk):
    path = small_disk / "f.bin"
    path.write_bytes(b"old")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(OSError) as info:
        write_bytes_atomic(path, b"new")
    assert info.value.errno == errno.EROFS and str(path) in str(info.value)
    assert path.read_bytes() == b"old"


def test_the_tmpfs_helper_skips_without_root(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        with mounted_tmpfs(tmp_path / "never"):
            pass
    assert not (tmp_path / "never").exists()


def test_write_errors_keep_the_builtin_kind_and_pickle(tmp_path):
    error = write_error(PermissionError(errno.EACCES, "Permission denied"), "/out/f.tif", backend="disk", filename="/root/out/f.tif")
    assert isinstance(error, PermissionError) and isinstance(error, StorageWriteError) and isinstance(error, StorageError)
    assert error.errno == errno.EACCES and error.filename == "/root/out/f.tif"
    assert str(error) == "cannot write the file: Permission denied (path '/out/f.tif', backend 'disk')"
    for original in [error, write_error(OSError(errno.ENOSPC, "No space left on device"), "/out/f.tif")]:
        copy = pickle.loads(pickle.dumps(original))
        assert type(copy) is type(original) and str(copy) == str(original)
        assert (copy.errno, copy.filename, copy.path, copy.backend) == (original.errno, original.filename, original.path, original.backend)


@pytest.mark.parametrize(
    "write",
    [
        lambda p: write_bytes_atomic(p, b"x" * 50_000),
        lambda p: write_text_atomic(p, "tiny"),  # fails when the buffer is flushed, after the writer returned
        lambda p: write_json_atomic(p, {"a": 1}),
    ],
    ids=["bytes", "text", "json"],
)
def test_a_full_disk_names_the_file_and_keeps_the_old_one(small_disk, write):
    path = small_disk / "out.json"
    path.write_text("old")
    fill(small_disk)
    for target in [path, small_disk / "new" / "x.json"]:
        with pytest.raises(OSError) as info:
            write(target)
        assert info.value.errno == errno.ENOSPC
        assert "no space left on device" in str(info.value) and str(target) in str(info.value)
    assert path.read_text() == "old"
    assert sorted(os.listdir(small_disk)) == sorted([FILLER, "new", "out.json"]) and os.listdir(small_disk / "new") == []


def test_atomic_path_recognises_numpy_short_writes(small_disk):
    """tifffile writes through numpy, whose short write says "N requested and M written" without errno."""
    path = small_disk / "img.tif"
    path.write_bytes(b"old")
    fill(small_disk, leave=16 * 1024)
    with pytest.raises(OSError) as info:
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, np.zeros((300, 300), np.uint16))
    assert info.value.errno == errno.ENOSPC and "no space left on device" in str(info.value)
    assert str(path) in str(info.value)
    assert path.read_bytes() == b"old" and temporaries(small_disk) == []
    assert free_bytes(small_disk) >= 16 * 1024
