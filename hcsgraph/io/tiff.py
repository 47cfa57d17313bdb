"""hcsgraph's TIFF format, shared by the disk backend and the pipeline's plane writes.

A plain, uncompressed TIFF written by tifffile, in ImageJ layout when the dtype allows (uint8,
uint16, float32; bool), so Fiji and tifffile both open it. A private tag
(:data:`HCSGRAPH_TIFF_TAG`) records the exact shape and dtype: ``bool`` is stored as uint8 0/1
and comes back as ``bool``, and singleton axes come back.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

from hcsgraph.io import location
from hcsgraph.io.atomic import PathLike, write_atomic

IMAGEJ_DTYPES = frozenset({np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)})
HCSGRAPH_TIFF_TAG = 65117
"""Private TIFF tag holding ``{"shape": [...], "dtype": "..."}`` as JSON."""


def write_tiff(handle: BinaryIO, array: np.ndarray, **tifffile_kwargs: Any) -> None:
    """Write ``array`` as a plain TIFF that records its exact shape and dtype.

    ``tifffile_kwargs`` go to :func:`tifffile.imwrite` (they override ``imagej`` and
    ``photometric``; ``extratags`` are added after the shape tag).
    """
    import tifffile

    stored = array.astype(np.uint8) if array.dtype == bool else np.ascontiguousarray(array)
    note = json.dumps({"shape": list(array.shape), "dtype": array.dtype.str})
    options: dict[str, Any] = {
        "imagej": stored.dtype in IMAGEJ_DTYPES and 2 <= stored.ndim <= 5,
        "photometric": "minisblack",
        **tifffile_kwargs,
    }
    options["extratags"] = [(HCSGRAPH_TIFF_TAG, "s", 0, note, True), *tifffile_kwargs.get("extratags", ())]
    tifffile.imwrite(handle, stored, **options)


def write_tiff_atomic(path: PathLike, array: Any, *, storage_options: Mapping[str, Any] | None = None,
                      **tifffile_kwargs: Any) -> None:
    """Write ``array`` to ``path`` as :func:`write_tiff` does, atomically (see :mod:`hcsgraph.io.atomic`).

    Without ``tifffile_kwargs`` the file is byte for byte what the disk backend writes. ``path`` may be a
    URL (``storage_options``: fsspec's options for it): the TIFF is encoded in memory and written with
    one ``PUT`` (:func:`hcsgraph.io.location.write_bytes_atomic`).
    """
    data = np.asarray(array)
    if location.is_url(path):
        buffer = io.BytesIO()
        write_tiff(buffer, data, **tifffile_kwargs)
        location.write_bytes_atomic(path, buffer.getvalue(), storage_options)
        return
    write_atomic(path, lambda handle: write_tiff(handle, data, **tifffile_kwargs))


def read_tiff(source: Any) -> np.ndarray:
    """Read a TIFF; restore the shape and dtype recorded by :func:`write_tiff` when present."""
    import tifffile

    with tifffile.TiffFile(source) as tif:
        data = tif.asarray()
        tag = tif.pages[0].tags.get(HCSGRAPH_TIFF_TAG)
    if tag is not None:
        note = json.loads(tag.value)
        data = data.reshape(note["shape"]).astype(np.dtype(note["dtype"]), copy=False)
    return data


__all__ = ["HCSGRAPH_TIFF_TAG", "IMAGEJ_DTYPES", "read_tiff", "write_tiff", "write_tiff_atomic"]
