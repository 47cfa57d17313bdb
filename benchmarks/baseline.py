"""The hand-written baseline: the cell-count work with tifffile, scipy, scikit-image and zarr.

One task per well in a ``ProcessPoolExecutor`` with one process per core. Each task reads the
well's TIFFs, smooths (Gaussian, sigma 2), thresholds (Otsu), opens (disk of radius 2), labels
and counts every image, writes the int32 labels (a Zarr array per well with one LZ4 chunk per
plane, or one TIFF per plane) and the counts as a CSV. It is the practical limit on the machine:
no scheduler, no graph, nothing but the work.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class WellJob:
    """One well: its planes as ``(site, channel, path)``, and where its outputs go."""

    well: str
    planes: tuple[tuple[int, int, str], ...]
    output: str
    backend: str
    sigma: float = 2.0
    radius: int = 2


def count_image(image: np.ndarray, sigma: float, radius: int) -> tuple[np.ndarray, int]:
    """Gaussian, Otsu, opening, label: the int32 labels and the number of objects."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu
    from skimage.measure import label
    from skimage.morphology import disk

    smooth = ndimage.gaussian_filter(image, sigma, truncate=4.0, mode="reflect")
    mask = smooth > threshold_otsu(smooth)
    footprint = disk(radius).astype(bool)
    opened = ndimage.binary_dilation(ndimage.binary_erosion(mask, footprint, border_value=1), footprint)
    labels = label(opened, connectivity=1).astype(np.int32)
    return labels, int(labels.max())


def run_well(job: WellJob) -> list[tuple[str, int, int, int]]:
    """Process one well and write its outputs; returns ``(well, site, channel, count)`` rows."""
    import tifffile

    sites = sorted({s for s, _, _ in job.planes})
    channels = sorted({c for _, c, _ in job.planes})
    rows = []
    array = None
    for site, channel, path in job.planes:
        labels, count = count_image(tifffile.imread(path), job.sigma, job.radius)
        if job.backend == "zarr":
            if array is None:
                array = _zarr_array(job, len(sites), len(channels), labels.shape)
            array[sites.index(site), channels.index(channel)] = labels
        else:
            target = Path(job.output) / "images" / f"{job.well}_s{site}_w{channel}.tif"
            _atomic_tiff(target, labels)
        rows.append((job.well, site, channel, count))
    table = Path(job.output) / "counts" / f"{job.well}.csv"
    tmp = table.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["well", "site", "channel", "cell_count"])
        writer.writerows(rows)
    os.replace(tmp, table)
    return rows


def _zarr_array(job: WellJob, n_sites: int, n_channels: int, shape: tuple[int, ...]):
    import zarr
    from zarr.codecs import BloscCodec

    return zarr.create_array(
        store=str(Path(job.output) / "labels.zarr"), name=job.well, shape=(n_sites, n_channels, *shape),
        chunks=(1, 1, *shape), dtype="int32",
        compressors=BloscCodec(cname="lz4", clevel=1, shuffle="shuffle"), overwrite=True,
    )


def _atomic_tiff(target: Path, data: np.ndarray) -> None:
    import tifffile

    tmp = target.with_name(f".{target.name}.tmp")
    tifffile.imwrite(tmp, data)
    os.replace(tmp, target)


def jobs_for(table, output: str | os.PathLike, backend: str) -> list[WellJob]:
    """One :class:`WellJob` per well of a plate index table."""
    jobs = []
    for well, rows in table.groupby("well", sort=False):
        planes = tuple((int(s), int(c), str(p)) for s, c, p in zip(rows["site"], rows["channel"], rows["path"],
                                                                    strict=True))
        jobs.append(WellJob(str(well), planes, os.fspath(output), backend))
    return jobs


def prepare_output(output: str | os.PathLike, backend: str) -> None:
    """Create the output folders (and the Zarr root group) before any task runs."""
    out = Path(output)
    (out / "counts").mkdir(parents=True, exist_ok=True)
    if backend == "zarr":
        import zarr

        zarr.open_group(str(out / "labels.zarr"), mode="w")
    else:
        (out / "images").mkdir(parents=True, exist_ok=True)


def run(pool: ProcessPoolExecutor, table, output: str | os.PathLike, backend: str) -> list[tuple[str, int, int, int]]:
    """Run the baseline on every well of ``table`` in ``pool``; returns every image's count."""
    prepare_output(output, backend)
    rows: list[tuple[str, int, int, int]] = []
    for well_rows in pool.map(run_well, jobs_for(table, output, backend)):
        rows.extend(well_rows)
    return rows


def start_pool(n_workers: int) -> ProcessPoolExecutor:
    """A pool with ``n_workers`` processes, all started and with their libraries imported.

    Processes are spawned (as dask's workers are), so their RSS is their own and not pages
    shared with a forked parent.
    """
    pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=multiprocessing.get_context("spawn"))
    list(pool.map(_warm, range(n_workers * 4)))
    return pool


def pool_pids(pool: ProcessPoolExecutor) -> list[int]:
    """The pids of the pool's processes (for memory sampling)."""
    return sorted(pool._processes)  # the executor keeps no public list of its processes


def _warm(_: int) -> int:
    time.sleep(0.1)  # long enough that every process of the pool takes a share
    count_image(np.random.default_rng(0).integers(0, 1000, (64, 64), dtype=np.uint16), 2.0, 2)
    import tifffile  # noqa: F401
    import zarr  # noqa: F401

    return os.getpid()
