"""A real full disk for tests: a tiny tmpfs mounted for one test, and a way to fill it.

Mounting needs Linux and root; without them, or when ``mount`` fails (no CAP_SYS_ADMIN in a
container), the test is skipped with the reason. The tmpfs is always unmounted afterwards.

Use from a test module::

    from tests.fulldisk import fill, mounted_tmpfs

    @pytest.fixture()
    def small_disk(tmp_path):
        with mounted_tmpfs(tmp_path / "tmpfs") as mount:
            yield mount
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

FILLER = "filler.bin"
"""Name of the file :func:`fill` writes."""


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


@contextmanager
def mounted_tmpfs(directory: Path, size: str = "1m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``directory`` (created) for the block; skip when that is impossible."""
    if not sys.platform.startswith("linux"):
        pytest.skip("a full-disk test mounts a tmpfs: Linux only")
    if os.geteuid() != 0:
        pytest.skip("a full-disk test mounts a tmpfs: needs root")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("a full-disk test mounts a tmpfs: mount/umount not found")
    directory.mkdir(parents=True, exist_ok=True)
    result = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(directory))
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {directory}: {result.stderr.strip() or result.returncode}")
    try:
        yield directory
    finally:
        if _run("umount", str(directory)).returncode != 0:
            _run("umount", "-l", str(directory))


def free_bytes(directory: Path) -> int:
    """Bytes an unprivileged writer could still put on the filesystem of ``directory``."""
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize


def fill(directory: Path, leave: int = 0) -> Path:
    """Fill the filesystem of ``directory`` with one file; then free about ``leave`` bytes (whole pages).

    Returns the filler's path. After ``fill(d)`` no new byte fits anywhere on the filesystem.
    """
    filler = directory / FILLER
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        chunk = b"\0" * (1 << 16)
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        if leave:
            page = os.statvfs(directory).f_frsize
            size = os.fstat(fd).st_size
            os.ftruncate(fd, max(0, size - -(-leave // page) * page))
    finally:
        os.close(fd)
    return filler
