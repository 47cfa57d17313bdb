"""Microscope plates in, one :class:`PlateIndex` out; see :func:`open_plate`."""

from hcsgraph.plate.detect import open_plate
from hcsgraph.plate.index import DuplicatePlaneError, PlateIndex, PlateLayoutError
from hcsgraph.plate.problems import PlateProblem
from hcsgraph.plate.reader import PlateReadError, read_plane

__all__ = [
    "DuplicatePlaneError",
    "PlateIndex",
    "PlateLayoutError",
    "PlateProblem",
    "PlateReadError",
    "open_plate",
    "read_plane",
]
