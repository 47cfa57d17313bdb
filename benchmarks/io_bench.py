"""Time Zarr ``save_batch`` against TIFF files on disk, in the same run.

``python -m benchmarks.io_bench`` prints JSON: seconds to save and load ``n`` uint16 images
(``size``×``size``) with the disk backend (one TIFF each) and with the zarr backend
(``save_batch``/``load_batch``), then zarr again with ``2n`` images to show how it scales.
Each figure is the best of ``repeat`` runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from hcsgraph.io import FileManager, StorageRegistry
from hcsgraph.io.disk import DiskStorageBackend
from hcsgraph.io.zarr import ZarrStorageBackend


def _timed(func, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = func(*args, **kwargs)
    return time.perf_counter() - start, result


def _once(fm: FileManager, images: list[np.ndarray], n: int, root: Path) -> dict[str, float]:
    disk_paths = [str(root / "disk" / f"img_{i}.tif") for i in range(n)]
    zarr_paths = [str(root / "zarr" / f"img_{i}.tif") for i in range(n)]
    zarr2_paths = [str(root / "zarr2n" / f"img_{i}.tif") for i in range(2 * n)]
    times = {}
    times["disk_tiff_save_s"], _ = _timed(
        lambda: [fm.save_array(a, p, "disk") for a, p in zip(images[:n], disk_paths, strict=True)]
    )
    times["zarr_save_batch_s"], _ = _timed(fm.save_batch, images[:n], zarr_paths, "zarr")
    times["zarr_save_batch_2n_s"], _ = _timed(fm.save_batch, images, zarr2_paths, "zarr")
    times["disk_tiff_load_s"], disk_back = _timed(fm.load_batch, disk_paths, "disk")
    times["zarr_load_batch_s"], zarr_back = _timed(fm.load_batch, zarr_paths, "zarr")
    times["zarr_load_batch_2n_s"], _ = _timed(fm.load_batch, zarr2_paths, "zarr")
    assert all(np.array_equal(a, b) for a, b in zip(images, disk_back, strict=False))
    assert all(np.array_equal(a, b) for a, b in zip(images, zarr_back, strict=False))
    return times


def run(n: int = 200, size: int = 512, workdir: str | None = None, repeat: int = 3) -> dict:
    """Run the benchmark ``repeat`` times and return the best time of each measure, and the ratios."""
    fm = FileManager(StorageRegistry({"disk": DiskStorageBackend(), "zarr": ZarrStorageBackend()}))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 4096, size=(size, size), dtype=np.uint16) for _ in range(2 * n)]
    best: dict[str, float] = {}
    for _ in range(repeat):
        root = Path(tempfile.mkdtemp(prefix="hcsgraph-io-bench-", dir=workdir))
        try:
            for key, value in _once(fm, images, n, root).items():
                best[key] = min(value, best.get(key, value))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    result: dict = {"n": n, "size": size, "repeat": repeat}
    result.update({k: round(v, 4) for k, v in best.items()})
    result["save_zarr_over_disk"] = round(best["zarr_save_batch_s"] / best["disk_tiff_save_s"], 2)
    result["save_zarr_2n_over_n"] = round(best["zarr_save_batch_2n_s"] / best["zarr_save_batch_s"], 2)
    result["load_zarr_over_disk"] = round(best["zarr_load_batch_s"] / best["disk_tiff_load_s"], 2)
    result["load_zarr_2n_over_n"] = round(best["zarr_load_batch_2n_s"] / best["zarr_load_batch_s"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(run(args.n, args.size, args.workdir, args.repeat), indent=2))


if __name__ == "__main__":
    main()
