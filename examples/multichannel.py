"""Different processing per channel: nuclei are counted, the second channel is background-corrected.

A dict keyed by channel, with ``group_by="channel"``, gives each channel its own chain; a later
step projects every site of a well into one image per channel.

    python examples/multichannel.py
"""

from hcsgraph import FunctionStep, Pipeline

pipeline = Pipeline(
    [
        FunctionStep(
            {
                1: [("gaussian_filter", {"sigma": 1.5}), "threshold_otsu", "label", "count_cells"],
                2: [("background_subtract", {"radius": 15}), ("median_filter", {"size": 3})],
            },
            name="per_channel",
            group_by="channel",
            output_dtype="int32",  # labels (int32) and corrected uint16 images share one plate
        ),
        FunctionStep("max_projection", name="site_projection", variable_components=("site",)),
    ],
    name="multichannel",
)


def main() -> None:
    import tempfile
    from pathlib import Path

    from distributed import Client, LocalCluster

    from hcsgraph.plate.synthetic import make_plate

    work = Path(tempfile.mkdtemp(prefix="hcsgraph-example-"))
    plate = make_plate(work / "plate", n_wells=2, sites=3, channels=2, size=(192, 192), seed=2)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster):
        result = pipeline.compile(plate.path, work / "results").compute()
    print(result.special_outputs["cell_counts"][["well", "site", "channel", "cell_count"]].to_string(index=False))
    print(f"One projected image per well and channel in {result.image_store}")


if __name__ == "__main__":
    main()
