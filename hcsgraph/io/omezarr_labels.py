"""Label images inside an OME-Zarr plate, the OME-NGFF way.

Each field image gets a ``labels`` group listing its label images, and each label image
``labels/<name>`` is a multiscale image of its own with ``image-label`` metadata whose source is
the field image (``../../``)::

    A/1/0/                 the field image (multiscales, omero)
    A/1/0/labels/          {"labels": ["nuclei", "cells"]}
    A/1/0/labels/nuclei/   multiscales + image-label; arrays 0, 1, ... (TCZYX, integer)

Label arrays have the field's axes; their channel axis holds the channels the labels were made
from. Background (0) is transparent in the colours. Pyramid levels of labels are taken by nearest
(:func:`hcsgraph.io.omezarr.write_planes` with ``downsample="nearest"``), never by mean.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from zarr.core.group import GroupMetadata

from hcsgraph.config import ZarrConfig
from hcsgraph.io import location
from hcsgraph.io.chunking import plan_chunks
from hcsgraph.io.omezarr import (
    _array_metadata,
    _documents,
    _ome,
    _write_documents,
    level_shape,
    multiscales_metadata,
    well_path,
)

LABELS_GROUP = "labels"


def label_path(name: str) -> str:
    """The path of label image ``name`` inside a field group."""
    return f"{LABELS_GROUP}/{name}"


def smallest_label_dtype(plane_pixels: int) -> np.dtype:
    """The smallest unsigned dtype that holds any label a plane of ``plane_pixels`` pixels can have."""
    most = (plane_pixels + 1) // 2  # a checkerboard of single-pixel objects
    for dtype in (np.uint8, np.uint16, np.uint32):
        if most <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def create_labels(
    path: str | os.PathLike,
    labels: Mapping[str, tuple[tuple[int, int, int, int, int], Any]],
    *,
    wells: Sequence[str],
    fields: int,
    zarr_config: ZarrConfig | None = None,
    n_levels: int = 1,
    pixel_size_um: float | None = None,
    z_spacing_um: float | None = None,
    storage_options: Mapping[str, Any] | None = None,
    time_interval_s: float | None = None,
) -> None:
    """Add empty label images to every field of an existing plate, before any pixels.

    ``labels``: name → (TCZYX shape, integer dtype). Fields keep their image; existing label
    images of the same names are replaced. ``path`` may be a URL (``storage_options``: fsspec's).
    """
    config = zarr_config or ZarrConfig()
    version = config.ome_zarr_version
    fmt = config.zarr_format
    if not location.isdir(os.fspath(path), storage_options):
        raise FileNotFoundError(f"{location.redact(os.fspath(path))}: no OME-Zarr plate to add labels to")
    for name, (_, dtype) in labels.items():
        if np.dtype(dtype).kind not in "iu":
            raise ValueError(f"label image {name!r}: dtype {np.dtype(dtype)} is not an integer type")
    listing = _documents(GroupMetadata(attributes=_ome({"labels": sorted(labels)}, version), zarr_format=fmt))
    per_label: dict[str, tuple[dict[str, bytes], list[dict[str, bytes]]]] = {}
    for name, (shape, dtype) in labels.items():
        image_label: dict[str, Any] = {
            "colors": [{"label-value": 0, "rgba": [0, 0, 0, 0]}],
            "source": {"image": "../../"},
        }
        if version == "0.4":
            image_label["version"] = "0.4"
        attrs = {"multiscales": [multiscales_metadata(name, n_levels, pixel_size_um, z_spacing_um, version, time_interval_s)],
                 "image-label": image_label}
        group_doc = _documents(GroupMetadata(attributes=_ome(attrs, version), zarr_format=fmt))
        level_docs = []
        for level in range(n_levels):
            level_dims = level_shape(tuple(int(s) for s in shape), level)
            chunks, shards = plan_chunks(level_dims, np.dtype(dtype), config)
            level_docs.append(_documents(_array_metadata(level_dims, np.dtype(dtype), chunks, shards, config)))
        per_label[name] = (group_doc, level_docs)
    documents: dict[str, dict[str, bytes]] = {}
    for well in wells:
        for field in range(fields):
            base = f"{well_path(well)}/{field}"
            documents[f"{base}/{LABELS_GROUP}"] = listing
            for name, (group_doc, level_docs) in per_label.items():
                documents[f"{base}/{label_path(name)}"] = group_doc
                for level, doc in enumerate(level_docs):
                    documents[f"{base}/{label_path(name)}/{level}"] = doc
    if location.is_url(os.fspath(path)):
        url = os.fspath(path).rstrip("/")
        fs, base_path = location.filesystem(url, storage_options)
        files = {f"{base_path.rstrip('/')}/{key}/{name}": data
                 for key, docs in documents.items() for name, data in docs.items()}
        location.call("cannot write the label images' metadata", url, fs.pipe, files,
                      storage_options=storage_options)
        return
    _write_documents(Path(path), documents)


__all__ = ["LABELS_GROUP", "create_labels", "label_path", "smallest_label_dtype"]
