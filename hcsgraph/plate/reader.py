"""Read one image plane from a plate: a TIFF file, or a plane of an OME-Zarr array.

An OME-Zarr plane reference is the array's path, ``#``, then 0-based indices of the axes before
Y and X in array order, e.g. ``/data/plate.zarr/A/1/0/0#t=0,c=1,z=0``.
"""

from __future__ import annotations

import os

import numpy as np
import tifffile

TIFF_SUFFIXES = (".tif", ".tiff")


class PlateReadError(Exception):
    """An image plane could not be read; the message names the file and the reason."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = str(path)
        self.reason = str(reason)

    def __str__(self) -> str:
        return f"cannot read image {self.path}: {self.reason}"

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


def plane_ref(array_path: str, **indices: int) -> str:
    """A plane reference for :func:`read_plane`: ``plane_ref('/p.zarr/A/1/0/0', t=0, c=1, z=0)``."""
    return f"{array_path}#" + ",".join(f"{k}={int(v)}" for k, v in indices.items())


def parse_plane_ref(ref: str) -> tuple[str, tuple[int, ...]] | None:
    """Split a plane reference into (array path, leading indices); None for a plain file path."""
    if "#" not in ref:
        return None
    array_path, _, spec = ref.rpartition("#")
    try:
        indices = tuple(int(part.split("=", 1)[1]) for part in spec.split(",") if part)
    except (IndexError, ValueError):
        return None
    return array_path, indices


def _open_zarr_array(array_path: str):
    import zarr

    try:
        return zarr.open_array(array_path, mode="r")
    except FileNotFoundError as exc:
        raise PlateReadError(array_path, "no Zarr array at this path") from exc
    except Exception as exc:  # noqa: BLE001 - any store/metadata failure is reported with the path
        raise PlateReadError(array_path, f"{type(exc).__name__}: {exc}") from exc


def _read_tiff(path: str, out: np.ndarray | None = None) -> np.ndarray:
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages:
                raise PlateReadError(path, "the TIFF holds no image")
            page = tif.pages[0]
            if out is not None and page.shape == out.shape and page.dtype == out.dtype:
                page.asarray(out=out)
                return out
            data = page.asarray()
    except PlateReadError:
        raise
    except FileNotFoundError as exc:
        raise PlateReadError(path, "file not found") from exc
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt files raise many types
        raise PlateReadError(path, f"{type(exc).__name__}: {exc}") from exc
    data = np.squeeze(data)
    if data.ndim != 2:
        raise PlateReadError(path, f"expected one 2D plane, found shape {data.shape}")
    return data


def read_plane(path: str | os.PathLike, out: np.ndarray | None = None) -> np.ndarray:
    """One 2D plane with its stored dtype: a TIFF file or an OME-Zarr plane reference.

    ``out``: a 2D array to read a TIFF plane straight into when its shape and dtype match (it is
    returned); otherwise the plane comes back as a new array and ``out`` is untouched.
    """
    path = os.fspath(path)
    ref = parse_plane_ref(path)
    if ref is not None:
        array_path, indices = ref
        array = _open_zarr_array(array_path)
        if len(indices) != array.ndim - 2:
            raise PlateReadError(path, f"expected {array.ndim - 2} indices for an array of shape {array.shape}")
        try:
            return np.asarray(array[indices])
        except Exception as exc:  # noqa: BLE001
            raise PlateReadError(path, f"{type(exc).__name__}: {exc}") from exc
    if path.lower().endswith(TIFF_SUFFIXES):
        return _read_tiff(path, out)
    try:
        import imageio.v3 as iio
    except ImportError as exc:  # pragma: no cover - imageio comes with scikit-image
        raise PlateReadError(path, "only TIFF files and OME-Zarr planes can be read") from exc
    try:
        data = np.asarray(iio.imread(path))
    except Exception as exc:  # noqa: BLE001
        raise PlateReadError(path, f"{type(exc).__name__}: {exc}") from exc
    if data.ndim != 2:
        raise PlateReadError(path, f"expected one 2D plane, found shape {data.shape}")
    return data


def plane_info(path: str) -> tuple[tuple[int, int], np.dtype]:
    """((Y, X), dtype) of a plane, from the file header or array metadata where possible."""
    ref = parse_plane_ref(path)
    if ref is not None:
        array = _open_zarr_array(ref[0])
        return (int(array.shape[-2]), int(array.shape[-1])), np.dtype(array.dtype)
    if path.lower().endswith(TIFF_SUFFIXES):
        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                shape = tuple(s for s in page.shape if s != 1) or page.shape
                if len(shape) == 2:
                    return (int(shape[0]), int(shape[1])), np.dtype(page.dtype)
        except Exception as exc:  # noqa: BLE001
            raise PlateReadError(path, f"{type(exc).__name__}: {exc}") from exc
    data = read_plane(path)
    return (int(data.shape[0]), int(data.shape[1])), data.dtype
