"""examples/nuclei_and_cells.py runs and its outputs hold what it says (in-process, threaded scheduler).

``tests/examples/test_examples.py`` runs the script itself as ``python examples/nuclei_and_cells.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
import zarr

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "nuclei_and_cells.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("hcsgraph_example_nuclei_and_cells", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def outcome(example, tmp_path_factory):
    return example.run(tmp_path_factory.mktemp("nuclei_and_cells"))


def test_the_module_pipeline_loads_for_the_cli(example):
    assert example.pipeline.step_names == ["segment", "measure", "nuclei", "cells"]


def test_objects_table_holds_nuclei_and_their_cells(outcome):
    assert outcome["result"].ok
    dataset = outcome["dataset"]
    meta = dataset.schema.metadata
    assert meta[b"hcsgraph.plate"] == b"plate" and meta[b"hcsgraph.pipeline"] == b"nuclei-and-cells"
    table = dataset.to_table().to_pandas()
    assert set(table["objects"]) == {"nuclei", "cells"}
    assert {"well", "site", "channel", "label", "area_um2", "centroid_x_um", "DAPI_mean", "GFP_mean",
            "GFP_integrated", "solidity"} <= set(table.columns)
    keys = ["well", "site", "label"]
    nuclei = table[table["objects"] == "nuclei"].set_index(keys).sort_index()
    cells = table[table["objects"] == "cells"].set_index(keys).sort_index()
    assert nuclei.index.equals(cells.index)  # one cell per nucleus, with its label
    assert (cells["area"] > nuclei["area"]).all()
    assert (nuclei["channel"] == 1).all() and (cells["channel"] == 2).all()  # the label slice's plane
    counts = nuclei.groupby(level=["well", "site"]).size()
    truth = outcome["plate"].counts().set_index(["well", "site"])["count"]
    assert (abs(counts - truth) <= np.maximum(1, 0.1 * truth)).all()
    summary = outcome["summary"].set_index(["well", "objects"])
    assert summary.loc[("A01", "nuclei"), "object_count"] == counts.loc["A01"].sum()


def test_gfp_means_match_the_truth_within_two_percent(example, outcome):
    table = outcome["dataset"].to_table(filter=pads.field("objects") == "nuclei").to_pandas()
    errors = np.abs(example.gfp_errors(table, outcome["plate"].objects))
    assert len(errors) >= 0.9 * len(outcome["plate"].objects)
    assert errors.max() <= 0.02


def test_label_images_are_in_the_plate_beside_the_image(outcome):
    result = outcome["result"]
    table = outcome["dataset"].to_table().to_pandas()
    field = f"{result.image_store}/A/1/0"  # well A01, site 1
    image = zarr.open_array(f"{field}/0", mode="r")
    assert image.dtype == np.uint16 and image.shape == (1, 2, 1, 256, 256)  # DAPI and GFP, as acquired
    arrays = {name: zarr.open_array(f"{field}/labels/{name}/0", mode="r") for name in ("nuclei", "cells")}
    assert all(a.dtype == np.uint16 and a.shape == (1, 1, 1, 256, 256) for a in arrays.values())
    assert zarr.open_group(f"{field}/labels", mode="r").attrs["ome"]["labels"] == ["cells", "nuclei"]
    nuclei, cells = arrays["nuclei"][0, 0, 0], arrays["cells"][0, 0, 0]
    rows = table[(table["well"] == "A01") & (table["site"] == 1)]
    assert set(np.unique(nuclei)) - {0} == set(rows[rows["objects"] == "nuclei"]["label"])
    np.testing.assert_array_equal(cells[nuclei != 0], nuclei[nuclei != 0])  # each cell contains its nucleus
    assert (cells != 0).sum() > 2 * (nuclei != 0).sum()
    objects = result.special_outputs["objects"]  # read from the Parquet parts, on the client
    assert len(objects) == len(table) and result.special_outputs.path("objects").endswith("objects")
    per_well = outcome["result"].output + "/objects_per_well.csv"
    import pandas as pd

    summary = pd.read_csv(per_well)
    assert set(summary["well"]) == {"A01", "A02"} and {"object_count", "GFP_mean_mean"} <= set(summary.columns)
