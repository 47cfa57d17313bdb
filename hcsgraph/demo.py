"""The demo: a synthetic plate, the cell-count pipeline on a LocalCluster, counts against truth."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hcsgraph.config import GlobalPipelineConfig, MaterializationBackend, VFSConfig
from hcsgraph.pipeline import FunctionStep, Pipeline, RunResult


def cell_count_pipeline(sigma: float = 2.0, opening_radius: int = 2, name: str = "cell-count") -> Pipeline:
    """Gaussian smoothing, Otsu threshold, opening, labelling and a count per image."""
    return Pipeline(
        [
            FunctionStep("gaussian_filter", sigma=sigma),
            FunctionStep("threshold_otsu"),
            FunctionStep("binary_opening", radius=opening_radius),
            FunctionStep("label"),
            FunctionStep("count_cells"),
        ],
        name=name,
    )


@dataclass
class DemoReport:
    """Detected counts joined to the ground truth."""

    result: RunResult
    comparison: pd.DataFrame
    tolerance: float

    @property
    def fraction_within(self) -> float:
        """Fraction of images whose count is within the tolerance of the truth."""
        return float(self.comparison["within"].mean()) if len(self.comparison) else 0.0


def compare_counts(counts: pd.DataFrame, truth: pd.DataFrame, tolerance: float = 0.10) -> pd.DataFrame:
    """One row per image: true and detected counts, relative error, and whether it is within tolerance."""
    keys = ["well", "site", "channel", "z", "t"]
    detected = counts[[*keys, "cell_count"]].rename(columns={"cell_count": "detected"})
    table = truth[[*keys, "count"]].rename(columns={"count": "truth"}).merge(detected, on=keys, how="left")
    table["relative_error"] = (table["detected"] - table["truth"]).abs() / table["truth"].clip(lower=1)
    table["within"] = table["relative_error"] <= tolerance
    return table


def run_demo(
    workdir: str | os.PathLike[str],
    *,
    wells: int = 16,
    sites: int = 4,
    channels: int = 2,
    size: int = 512,
    seed: int = 0,
    backend: str = "zarr",
    client: Any = None,
    progress: bool = True,
    tolerance: float = 0.10,
) -> DemoReport:
    """Generate a plate under ``workdir``, run the cell-count pipeline and compare to the truth."""
    from hcsgraph.monitor import run_graph
    from hcsgraph.plate import open_plate
    from hcsgraph.plate.synthetic import make_plate

    workdir = Path(workdir)
    plate = make_plate(workdir / "plate", n_wells=wells, sites=sites, channels=channels, size=(size, size),
                       seed=seed)
    config = GlobalPipelineConfig(vfs=VFSConfig(materialization_backend=MaterializationBackend(backend)))
    graph = cell_count_pipeline().compile(open_plate(plate.path), workdir / "results", config, overwrite=True)
    result = run_graph(graph, client=client, progress=progress)
    comparison = compare_counts(result.special_outputs["cell_counts"], plate.ground_truth, tolerance)
    return DemoReport(result, comparison, tolerance)
