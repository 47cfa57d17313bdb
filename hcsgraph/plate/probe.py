"""The plate's image shape and dtype, decided from a sample of its files rather than from the first one.

Instrument metadata wins where a layout has it; otherwise the most common (shape, dtype) over up to
:data:`SAMPLE_SIZE` files spread across the plate (TIFF headers only). Sampled files that cannot be
read, or that differ from the plate, are reported; they never decide the plate's shape.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hcsgraph.io.location import is_url
from hcsgraph.plate.problems import METADATA_MISMATCH, ODD_IMAGE, UNREADABLE, PlateProblem
from hcsgraph.plate.reader import PlateReadError, plane_info

SAMPLE_SIZE = 8  # files sampled for the shape and dtype
MAX_TRIES = 32  # files tried in all when every sampled file is unreadable


@dataclass
class ImageInfo:
    """The plate's plane shape and dtype (None when undecided), the problems seen, and why undecided."""

    shape: tuple[int, int] | None
    dtype: np.dtype | None
    problems: list[PlateProblem] = field(default_factory=list)
    error: str | None = None


def spread(items: Sequence[str], count: int) -> list[str]:
    """Up to ``count`` items evenly spread over ``items`` (first and last included), in order."""
    if len(items) <= count:
        return list(items)
    picks = np.unique(np.linspace(0, len(items) - 1, count).round().astype(int))
    return [items[i] for i in picks]


def _sample_order(paths: Sequence[str]) -> list[str]:
    """A spread sample first, then further spread files to try when the sample is unreadable."""
    first = spread(paths, SAMPLE_SIZE)
    chosen = set(first)
    rest = [p for p in spread(paths, MAX_TRIES) if p not in chosen]
    return first + rest


def _describe(shape: tuple[int, int], dtype: np.dtype) -> str:
    return f"{shape[0]}x{shape[1]} {np.dtype(dtype).name}"


def probe_images(
    paths: Sequence[str],
    *,
    shape: tuple[int, int] | None = None,
    dtype: np.dtype | str | None = None,
    relative_to: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    sizes: Mapping[str, int] | None = None,
) -> ImageInfo:
    """Decide the plate's plane shape and dtype from ``paths`` (deduplicated, plate order).

    ``shape`` / ``dtype``: what the instrument metadata says (None where it says nothing). When both are
    given nothing is read. ``storage_options``: for files at URLs (the sample is read concurrently there);
    ``sizes``: their sizes in bytes where known (from the folder's listing), which saves a request each. Problem paths are made relative to ``relative_to`` when they lie under it.
    """
    meta_shape = None if shape is None else (int(shape[0]), int(shape[1]))
    meta_dtype = None if dtype is None else np.dtype(dtype)
    if meta_shape is not None and meta_dtype is not None:
        return ImageInfo(meta_shape, meta_dtype)
    unique = list(dict.fromkeys(paths))
    if not unique:
        return ImageInfo(meta_shape, meta_dtype, error="the plate has no images")

    def rel(path: str) -> str:
        if relative_to and path.startswith(relative_to.rstrip("/") + "/"):
            return path[len(relative_to.rstrip("/")) + 1:]
        return path

    problems: list[PlateProblem] = []
    found: dict[str, tuple[tuple[int, int], np.dtype]] = {}

    def info(path: str) -> tuple[tuple[int, int], np.dtype] | PlateReadError:
        try:
            if is_url(path):
                return plane_info(path, storage_options, size=(sizes or {}).get(path))
            return plane_info(path)
        except PlateReadError as exc:
            return exc

    order = _sample_order(unique)
    results: dict[str, tuple[tuple[int, int], np.dtype] | PlateReadError] = {}
    if any(is_url(p) for p in order[:SAMPLE_SIZE]):  # one round trip for the sample, not one per file
        with ThreadPoolExecutor(max_workers=SAMPLE_SIZE) as pool:
            results = dict(zip(order[:SAMPLE_SIZE], pool.map(info, order[:SAMPLE_SIZE]), strict=True))
    for number, path in enumerate(order):
        if number >= SAMPLE_SIZE and found:
            break
        result = results[path] if path in results else info(path)
        if isinstance(result, PlateReadError):
            problems.append(PlateProblem(UNREADABLE, rel(path), result.reason))
        else:
            found[path] = result
    if not found:
        tried = "; ".join(str(p) for p in problems[:3])
        return ImageInfo(meta_shape, meta_dtype, problems,
                         error=f"none of the {len(problems)} sampled image files could be read ({tried})")
    counts = Counter(found.values())
    chosen_shape, chosen_dtype = counts.most_common(1)[0][0]
    if meta_shape is not None:
        matching = Counter(d for s, d in found.values() if s == meta_shape)
        if matching:
            chosen_shape, chosen_dtype = meta_shape, matching.most_common(1)[0][0]
        else:
            problems.append(PlateProblem(
                METADATA_MISMATCH, "(instrument metadata)",
                f"the metadata says the images are {meta_shape[0]}x{meta_shape[1]}, but the sampled images are "
                f"{_describe(chosen_shape, chosen_dtype)}; using the images' size"))
    if meta_dtype is not None:
        chosen_dtype = meta_dtype
    for path, (s, d) in found.items():
        if (s, d) != (chosen_shape, chosen_dtype):
            problems.append(PlateProblem(ODD_IMAGE, rel(path), f"{_describe(s, d)}, while the plate's images are "
                                                               f"{_describe(chosen_shape, chosen_dtype)}"))
    return ImageInfo(chosen_shape, chosen_dtype, problems)
