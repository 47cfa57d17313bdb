"""Overhead of numpy → torch → numpy conversion around a 2048×2048 float32 filter."""

from __future__ import annotations

import statistics
import time

import numpy as np

from hcsgraph.memory import convert_memory
from hcsgraph.memory.libraries import import_library


def main(repeats: int = 30) -> dict[str, float]:
    torch = import_library("torch")
    torch.set_num_threads(1)
    image = np.random.default_rng(0).random((1, 1, 2048, 2048), dtype=np.float32)
    kernel = torch.ones((1, 1, 5, 5), dtype=torch.float32) / 25.0

    def filt(t):
        return torch.nn.functional.conv2d(t, kernel, padding=2)

    filt(torch.from_numpy(image))  # warm up
    bare, wrapped = [], []
    for _ in range(repeats):
        tensor = torch.from_numpy(image)
        start = time.perf_counter()
        filt(tensor).numpy()
        bare.append(time.perf_counter() - start)
        start = time.perf_counter()
        convert_memory(filt(convert_memory(image, "numpy", "torch")), "torch", "numpy")
        wrapped.append(time.perf_counter() - start)
    filter_s, total_s = statistics.median(bare), statistics.median(wrapped)
    return {"filter_ms": filter_s * 1e3, "with_conversion_ms": total_s * 1e3,
            "overhead_pct": 100 * (total_s - filter_s) / filter_s}


if __name__ == "__main__":
    print(main())
