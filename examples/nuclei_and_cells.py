"""From counts to cells: segment nuclei, grow cells around them, measure both in two channels.

Every step sees one field as a ``[C, Y, X]`` stack (``variable_components=("channel",)``: DAPI is
slice 0, GFP slice 1):

1. ``segment``: DAPI → Gaussian → Otsu → fill holes → watershed (splits touching nuclei) → drop
   specks = nuclei; ``expand_labels`` grows each nucleus into its cell. The ``[nuclei, cells]``
   label stack is handed on as the special output ``labels``; the image passes through.
2. ``measure``: ``measure_objects_with_labels`` measures every nucleus and every cell (shape,
   position in µm, DAPI and GFP intensities) into the ``objects`` table, written as one Parquet
   part per field under ``objects/well=<W>/``.
3. ``nuclei`` and ``cells``: each label image is written into the OME-Zarr plate as labels
   (``output="labels:nuclei"`` → ``<field>/labels/nuclei/``, with ``image-label`` metadata, what
   napari shows over the image); the field image stays the plate's own DAPI and GFP planes.

Run it as it is (a small generated plate with touching nuclei and known GFP levels, on a local
cluster); it prints the per-well summary and how well the GFP means match the truth:

    python examples/nuclei_and_cells.py

or on a plate of your own (DAPI as channel 1, another stain as channel 2):

    hcsgraph run examples/nuclei_and_cells.py /data/plate1 -o /results/plate1
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import hcsgraph.functions as hf
from hcsgraph import FunctionStep, Pipeline
from hcsgraph.functions.objects import with_materializers
from hcsgraph.memory.decorators import numpy
from hcsgraph.pipeline import special_inputs, special_outputs
from hcsgraph.pipeline.tables import table_materializer

PIXEL_SIZE_UM = 0.65
CHANNELS = {"DAPI": 0, "GFP": 1}  # slice positions in the [C, Y, X] stack of a field


@special_outputs("labels")
@numpy
def segment(stack: np.ndarray, dapi: int = 0, sigma: float = 1.0, min_distance: int = 3, min_area: int = 15,
            cell_distance: float = 6) -> tuple[np.ndarray, np.ndarray]:
    """Nuclei from the DAPI slice and cells around them; returns the stack and labels [nuclei, cells]."""
    nuclei = stack[dapi:dapi + 1]
    for name, kwargs in (("gaussian_filter", {"sigma": sigma}), ("threshold_otsu", {}), ("fill_holes", {}),
                         ("watershed", {"min_distance": min_distance}), ("remove_small_objects", {"min_area": min_area})):
        nuclei = hf.get(name)(nuclei, **kwargs)
    cells = hf.get("expand_labels")(nuclei, distance=cell_distance)
    return stack, np.concatenate([nuclei, cells]).astype(np.int32)


@special_inputs("labels")
@numpy
def nuclei_labels(stack: np.ndarray, labels: Any = None) -> np.ndarray:
    """The nuclei of the special input ``labels`` as this step's one-slice result."""
    return np.asarray(labels[:1], dtype=np.int32)


@special_inputs("labels")
@numpy
def cell_labels(stack: np.ndarray, labels: Any = None) -> np.ndarray:
    """The cells of the special input ``labels`` as this step's one-slice result."""
    return np.asarray(labels[1:2], dtype=np.int32)


for _labels in (nuclei_labels, cell_labels):
    _labels.reduces_stack = True  # one label plane per field from its [DAPI, GFP] stack
    _labels.image_kind = "labels"  # pyramids by nearest, never by mean


def build_pipeline(plate_name: str | None = None) -> Pipeline:
    """The pipeline; ``plate_name`` goes into each Parquet part's metadata."""
    measure = with_materializers(
        hf.get("measure_objects_with_labels"),
        objects=table_materializer(plate=plate_name, pipeline="nuclei-and-cells"),
    )
    field = ("channel",)
    return Pipeline(
        [
            FunctionStep(segment, name="segment", variable_components=field),
            FunctionStep(measure, name="measure", variable_components=field,
                         labels_slices={"nuclei": 0, "cells": 1}, intensity_slices=CHANNELS,
                         pixel_size_um=PIXEL_SIZE_UM),
            FunctionStep(nuclei_labels, name="nuclei", variable_components=field, output="labels:nuclei"),
            FunctionStep(cell_labels, name="cells", variable_components=field, output="labels:cells"),
        ],
        name="nuclei-and-cells",
    )


pipeline = build_pipeline()


def run(work: Path, client: Any = None) -> dict[str, Any]:
    """Generate a plate under ``work``, run the pipeline (on ``client``, else the threaded scheduler),
    and return the result, the plate, the assembled dataset and the per-well summary."""
    import dask

    from hcsgraph.pipeline.tables import assemble_parquet_dataset, summarize_per_well
    from hcsgraph.plate.synthetic import make_plate

    plate = make_plate(work / "plate", n_wells=2, sites=2, channels=2, size=(256, 256), seed=4,
                       touching=0.3, known_intensity=True, pixel_size_um=PIXEL_SIZE_UM)
    graph = build_pipeline(plate.path.name).compile(plate.path, work / "results")
    if client is None:
        with dask.config.set(scheduler="threads"):
            result = graph.compute()
    else:
        result = graph.compute()
    dataset = assemble_parquet_dataset(work / "results" / "objects")
    summary = summarize_per_well(dataset, ["area_um2", "DAPI_mean", "GFP_mean"], by=["objects"])
    return {"result": result, "plate": plate, "dataset": dataset, "summary": summary}


def gfp_errors(nuclei: Any, truth: Any) -> np.ndarray:
    """Relative error of each nucleus' GFP mean against the nearest true nucleus (within 2 px)."""
    errors = []
    for (well, site), found in nuclei.groupby(["well", "site"]):
        site_truth = truth[(truth["well"] == well) & (truth["site"] == site)]
        for row in found.itertuples():
            distance = np.hypot(site_truth["y"] - row.centroid_y, site_truth["x"] - row.centroid_x)
            if distance.min() <= 2:
                errors.append(row.GFP_mean / site_truth["GFP_mean"].iloc[int(np.argmin(distance))] - 1)
    return np.asarray(errors)


def main() -> None:
    import tempfile

    import pandas as pd
    import pyarrow.dataset as pads
    from distributed import Client, LocalCluster

    work = Path(tempfile.mkdtemp(prefix="hcsgraph-example-"))
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        out = run(work, client)
    pd.set_option("display.width", 160)
    print(out["summary"].round(2).to_string(index=False))
    nuclei = out["dataset"].to_table(filter=pads.field("objects") == "nuclei").to_pandas()
    counts = nuclei.groupby(["well", "site"]).size().rename("cell_count").reset_index()
    truth = out["plate"].counts().rename(columns={"count": "true_count"})
    print(counts.merge(truth, on=["well", "site"]).to_string(index=False))
    errors = np.abs(gfp_errors(nuclei, out["plate"].objects))
    print(f"GFP mean per nucleus vs truth: {len(errors)} nuclei matched, median error {np.median(errors):.2%}, "
          f"{np.mean(errors <= 0.02):.0%} within 2%")
    print(f"Object table (Parquet, partitioned by well): {work / 'results' / 'objects'}")
    print(f"Labels (channel 1 nuclei, channel 2 cells): {out['result'].image_store}")


if __name__ == "__main__":
    main()
