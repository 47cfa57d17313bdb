"""Count nuclei in every image of a plate.

Run it as it is (it generates a small synthetic plate and runs on a local cluster):

    python examples/cell_count.py

or point the CLI at a plate of your own:

    hcsgraph run examples/cell_count.py /data/plate1 -o /results/plate1
"""

from hcsgraph import FunctionStep, Pipeline

pipeline = Pipeline(
    [
        FunctionStep("gaussian_filter", sigma=2.0),
        FunctionStep("threshold_otsu"),
        FunctionStep("binary_opening", radius=2),
        FunctionStep("label"),
        FunctionStep("count_cells"),
    ],
    name="cell-count",
)


def main() -> None:
    import tempfile
    from pathlib import Path

    from distributed import Client, LocalCluster

    from hcsgraph.plate.synthetic import make_plate

    work = Path(tempfile.mkdtemp(prefix="hcsgraph-example-"))
    plate = make_plate(work / "plate", n_wells=4, sites=2, channels=1, size=(256, 256), seed=1)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster):
        result = pipeline.compile(plate.path, work / "results").compute()
    counts = result.special_outputs["cell_counts"][["well", "site", "cell_count"]]
    truth = plate.ground_truth[["well", "site", "count"]]
    print(counts.merge(truth, on=["well", "site"]).to_string(index=False))
    print(f"OME-Zarr plate: {result.image_store}")


if __name__ == "__main__":
    main()
