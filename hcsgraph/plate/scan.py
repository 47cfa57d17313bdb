"""List a plate folder's files, and report what cannot be listed instead of dropping it.

Hidden entries (``.name``) are skipped. Folder symlinks are followed after every real folder has been
listed, once per target folder: a symlink back to a folder above it is a :data:`SYMLINK_LOOP`, one to a
folder already listed a :data:`REPEATED_FOLDER`. A symlink to nothing is a :data:`DANGLING_SYMLINK`.
hcsgraph outputs written inside the plate (a folder with ``run.json`` or its image store next to a
``.hcsgraph`` folder) and Zarr stores are skipped, so that results never count as input images.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from hcsgraph.plate.problems import (
    DANGLING_SYMLINK,
    REPEATED_FOLDER,
    SKIPPED_OUTPUT,
    SKIPPED_ZARR,
    SYMLINK_LOOP,
    UNREADABLE_FOLDER,
    PlateProblem,
)

# The names an hcsgraph run writes in its output folder (see hcsgraph.pipeline.layout).
RUN_STATE_DIR = ".hcsgraph"
RUN_MANIFEST = "run.json"
RUN_IMAGE_STORES = ("plate.ome.zarr", "images")
ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")
# The details of the folders skipped (also in a URL plate's listing, see hcsgraph.plate.source).
OUTPUT_FOLDER_DETAIL = "an hcsgraph output folder (run.json or its images next to .hcsgraph); open it directly to use it"
OUTPUT_IMAGES_DETAIL = "the images of an hcsgraph run written into this folder"
ZARR_STORE_DETAIL = "a Zarr store inside a plate of image files; open it directly to use it"


@dataclass
class FileScan:
    """A folder's files (``/``-separated paths relative to it, sorted) and the problems met listing them."""

    files: list[str] = field(default_factory=list)
    problems: list[PlateProblem] = field(default_factory=list)


def is_hcsgraph_output(directory: str | os.PathLike) -> bool:
    """True for an hcsgraph output folder: a ``.hcsgraph`` folder next to ``run.json`` or an image store."""
    directory = os.fspath(directory)
    if not os.path.isdir(os.path.join(directory, RUN_STATE_DIR)):
        return False
    return os.path.isfile(os.path.join(directory, RUN_MANIFEST)) or any(
        os.path.isdir(os.path.join(directory, name)) for name in RUN_IMAGE_STORES)


def _skip_reason(directory: str) -> tuple[str, str] | None:
    """(kind, detail) when a sub-folder of a plate is not plate input."""
    if is_hcsgraph_output(directory):
        return SKIPPED_OUTPUT, OUTPUT_FOLDER_DETAIL
    if any(os.path.exists(os.path.join(directory, marker)) for marker in ZARR_MARKERS):
        return SKIPPED_ZARR, ZARR_STORE_DETAIL
    return None


def _key(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def scan_files(root: str | os.PathLike) -> FileScan:
    """Every regular file under ``root`` (following symlinks), with the problems found on the way."""
    root = os.fspath(root)
    scan = FileScan()
    seen: dict[tuple[int, int], str] = {_key(os.stat(root)): "."}
    deferred: list[tuple[str, str, tuple[int, int]]] = []  # folder symlinks: (relative name, path, target)

    def note(kind: str, rel: str, detail: str = "") -> None:
        scan.problems.append(PlateProblem(kind, rel, detail))

    def walk(rel: str, directory: str) -> None:
        pending = [(rel, directory)]
        while pending:
            rel, directory = pending.pop()
            try:
                with os.scandir(directory) as listing:
                    entries = sorted(listing, key=lambda e: e.name)
            except OSError as exc:
                note(UNREADABLE_FOLDER, rel.rstrip("/") or ".", exc.strerror or str(exc))
                continue
            output_here = is_hcsgraph_output(directory)
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                name = f"{rel}{entry.name}"
                try:
                    if entry.is_symlink():
                        try:
                            target = os.stat(entry.path)
                        except FileNotFoundError:
                            note(DANGLING_SYMLINK, name, f"points to {os.readlink(entry.path)!r}, which does not exist")
                            continue
                        except OSError as exc:
                            kind = SYMLINK_LOOP if exc.errno == errno.ELOOP else UNREADABLE_FOLDER
                            note(kind, name, exc.strerror or str(exc))
                            continue
                        if stat.S_ISDIR(target.st_mode):
                            deferred.append((name, entry.path, _key(target)))
                        elif stat.S_ISREG(target.st_mode):
                            scan.files.append(name)
                    elif entry.is_dir(follow_symlinks=False):
                        if output_here and entry.name in RUN_IMAGE_STORES:
                            note(SKIPPED_OUTPUT, name, OUTPUT_IMAGES_DETAIL)
                            continue
                        if skipped := _skip_reason(entry.path):
                            note(skipped[0], name, skipped[1])
                            continue
                        key = _key(entry.stat(follow_symlinks=False))
                        if key in seen:  # a bind mount of a folder already listed
                            note(REPEATED_FOLDER, name, f"the same folder as {seen[key]}")
                            continue
                        seen[key] = name
                        pending.append((f"{name}/", entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        scan.files.append(name)
                except OSError as exc:
                    note(UNREADABLE_FOLDER, name, exc.strerror or str(exc))

    walk("", root)
    while deferred:
        name, path, key = deferred.pop(0)
        if key in seen:
            target = os.path.realpath(path)
            parent = os.path.realpath(os.path.dirname(path))
            if parent == target or parent.startswith(target.rstrip(os.sep) + os.sep):
                note(SYMLINK_LOOP, name, f"leads back to {seen[key]}, a folder above it")
            else:
                note(REPEATED_FOLDER, name, f"the same folder as {seen[key]}")
            continue
        if skipped := _skip_reason(path):
            note(skipped[0], name, skipped[1])
            continue
        seen[key] = name
        walk(f"{name}/", path)
    scan.files.sort()
    return scan
