"""A pipeline with a PyTorch step between numpy steps.

The torch step runs on the GPU when the workers have one (start them with
``hcsgraph.gpu.local_cluster()``) and on the CPU otherwise. The graph holds a ``to_torch``
conversion before it and a ``to_numpy`` conversion after it, and nowhere else.

    python examples/torch_step.py        # needs: pip install "hcsgraph[torch]"
"""

from hcsgraph import FunctionStep, Pipeline
from hcsgraph.memory import torch as torch_function


@torch_function(oom_recovery=True)
def unsharp_mask(stack, sigma: float = 2.0, amount: float = 1.0):
    """Sharpen each slice: image + amount * (image - blurred), in float32."""
    import torch

    from hcsgraph.functions import get

    blurred = get("gaussian_filter", "torch")(stack.to(torch.float32), sigma=sigma)
    return stack.to(torch.float32) + amount * (stack.to(torch.float32) - blurred)


unsharp_mask.output_dtype = "float32"

pipeline = Pipeline(
    [
        FunctionStep("background_subtract", radius=20),
        FunctionStep(unsharp_mask, sigma=1.5, amount=0.8),
        FunctionStep("threshold_otsu"),
        FunctionStep("label"),
        FunctionStep("count_cells"),
    ],
    name="torch-sharpen-count",
)


def main() -> None:
    import tempfile
    from pathlib import Path

    from distributed import Client

    from hcsgraph.gpu import local_cluster
    from hcsgraph.plate.synthetic import make_plate

    work = Path(tempfile.mkdtemp(prefix="hcsgraph-example-"))
    plate = make_plate(work / "plate", n_wells=2, sites=2, channels=1, size=(192, 192), seed=3)
    with local_cluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster):
        graph = pipeline.compile(plate.path, work / "results")
        print(dict(graph.task_counts()))
        result = graph.compute()
    print(result.special_outputs["cell_counts"][["well", "site", "cell_count"]].to_string(index=False))


if __name__ == "__main__":
    main()
