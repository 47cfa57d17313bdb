"""Microscope plates in, one :class:`PlateIndex` out; see :func:`open_plate`."""

from hcsgraph.plate.detect import open_plate
from hcsgraph.plate.index import PlateIndex, PlateLayoutError
from hcsgraph.plate.reader import PlateReadError, read_plane

__all__ = ["PlateIndex", "PlateLayoutError", "PlateReadError", "open_plate", "read_plane"]
