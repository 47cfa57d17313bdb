"""What went wrong while indexing a plate, short of failing: one :class:`PlateProblem` per finding.

A plate index keeps its findings in ``PlateIndex.problems``; none of them stops :func:`open_plate`.
Missing planes are not problems but ``PlateIndex.gaps`` (a table).
"""

from __future__ import annotations

from dataclasses import dataclass

# The kinds of problem, as they appear in ``PlateProblem.kind``.
UNRECOGNIZED = "unrecognized file"  # a file the layout cannot place (kept in PlateIndex.unrecognized too)
UNREADABLE = "unreadable image"  # a sampled image whose header cannot be read (empty, truncated, not an image)
ODD_IMAGE = "odd image"  # a sampled image whose shape or dtype differs from the plate's
METADATA_MISMATCH = "metadata mismatch"  # the instrument metadata disagrees with the images on disk
DANGLING_SYMLINK = "dangling symlink"  # a symlink whose target does not exist
SYMLINK_LOOP = "symlink loop"  # a symlink that leads back to a folder above it (or to itself)
REPEATED_FOLDER = "repeated folder"  # a folder symlink to a folder that was already scanned
UNREADABLE_FOLDER = "unreadable folder"  # a folder that cannot be listed (permissions, I/O error)
SKIPPED_OUTPUT = "skipped hcsgraph output"  # an hcsgraph output (run.json + .hcsgraph) inside the plate
SKIPPED_ZARR = "skipped zarr store"  # a Zarr store inside a plate of image files
UNLISTED = "unlisted file"  # an image file the instrument's file list does not name (not indexed)
LISTED_MISSING = "listed file missing"  # a file the instrument's file list names that is not on disk
PROJECTIONS_ONLY = "projections only"  # an ImageXpress z-series export holding only ZStep_0 projections


@dataclass(frozen=True)
class PlateProblem:
    """One finding: its ``kind`` (a constant of this module), the ``path`` it concerns and a ``detail``."""

    kind: str
    path: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}" + (f" ({self.detail})" if self.detail else "")


def summarize(problems: list[PlateProblem], limit: int = 3) -> list[str]:
    """One line per kind: ``'dangling symlink: 2 (Images/a.tif, Images/b.tif)'``."""
    by_kind: dict[str, list[PlateProblem]] = {}
    for problem in problems:
        by_kind.setdefault(problem.kind, []).append(problem)
    lines = []
    for kind, found in by_kind.items():
        shown = ", ".join(p.path for p in found[:limit]) + (" ..." if len(found) > limit else "")
        lines.append(f"{kind}: {len(found)} ({shown})")
    return lines
