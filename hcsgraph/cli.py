"""The ``hcsgraph`` command: demo, run, info, convert."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from hcsgraph.config import GlobalPipelineConfig, MaterializationBackend, OnError, VFSConfig


class CLIError(click.ClickException):
    """An error shown as one clear line, exit code 2."""

    exit_code = 2


@contextlib.contextmanager
def _client(scheduler: str | None, workers: int | None, threads: int, timeout: float) -> Iterator[Any]:
    """A Client on ``scheduler``, or on hcsgraph's local cluster with ``workers`` processes."""
    from distributed import Client

    if scheduler:
        try:
            client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise CLIError(f"cannot reach the scheduler at {scheduler} within {timeout:g} s: {exc}") from exc
        with client:
            yield client
        return
    from hcsgraph.gpu import local_cluster

    n = workers or max(1, (os.cpu_count() or 1))
    with local_cluster(n_workers=n, threads_per_worker=threads) as cluster, Client(cluster) as client:
        yield client


def _print_dashboard(client: Any) -> None:
    from hcsgraph.monitor import dashboard_link

    link = dashboard_link(client)
    if link:
        click.echo(f"Dashboard: {link}")


def _open_plate(path: str, pattern: str | None = None) -> Any:
    from hcsgraph.plate import open_plate

    try:
        return open_plate(path, pattern=pattern) if pattern else open_plate(path)
    except FileNotFoundError as exc:
        raise CLIError(f"plate {path}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - unrecognised layouts etc.
        raise CLIError(f"plate {path}: {exc}") from exc


def load_pipeline_file(path: str) -> Any:
    """The Pipeline a Python file defines as ``pipeline`` (or returns from ``build_pipeline()``)."""
    import cloudpickle

    from hcsgraph.pipeline import Pipeline

    file = Path(path)
    if not file.is_file():
        raise CLIError(f"pipeline file {path} does not exist")
    module_name = f"hcsgraph_user_pipeline_{abs(hash(str(file.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise CLIError(f"pipeline file {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001
        raise CLIError(f"pipeline file {path} failed to load: {type(exc).__name__}: {exc}") from exc
    # Workers cannot import this file by name: ship its functions by value.
    cloudpickle.register_pickle_by_value(module)
    pipeline = getattr(module, "pipeline", None)
    if pipeline is None and callable(getattr(module, "build_pipeline", None)):
        pipeline = module.build_pipeline()
    if not isinstance(pipeline, Pipeline):
        raise CLIError(f"pipeline file {path} must define `pipeline = Pipeline([...])` or `build_pipeline()`")
    return pipeline


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hcsgraph")
def main() -> None:
    """High-content-screening pipelines as Dask graphs."""


_cluster_options = [
    click.option("--scheduler", default=None, help="Address of a running scheduler, e.g. tcp://10.0.0.1:8786."),
    click.option("--workers", type=int, default=None, help="Worker processes of the local cluster (default: cores)."),
    click.option("--threads-per-worker", type=int, default=1, show_default=True),
    click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to reach the scheduler."),
]


def cluster_options(func: Any) -> Any:
    for option in reversed(_cluster_options):
        func = option(func)
    return func


@main.command()
@click.option("--wells", type=int, default=16, show_default=True)
@click.option("--sites", type=int, default=4, show_default=True)
@click.option("--channels", type=int, default=2, show_default=True)
@click.option("--size", type=int, default=512, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--backend", type=click.Choice(["zarr", "disk"]), default="zarr", show_default=True)
@click.option("--output", "-o", type=click.Path(), default=None, help="Work directory (default: a temporary one).")
@cluster_options
def demo(wells: int, sites: int, channels: int, size: int, seed: int, backend: str, output: str | None,
         scheduler: str | None, workers: int | None, threads_per_worker: int, timeout: float) -> None:
    """Generate a plate, count its cells on a local cluster and compare with the ground truth."""
    from hcsgraph.demo import run_demo

    workdir = Path(output) if output else Path(tempfile.mkdtemp(prefix="hcsgraph-demo-"))
    click.echo(f"Plate: {wells} wells x {sites} sites x {channels} channels, {size}x{size} uint16 in {workdir}")
    with _client(scheduler, workers or 2, threads_per_worker, timeout) as client:
        _print_dashboard(client)
        report = run_demo(workdir, wells=wells, sites=sites, channels=channels, size=size, seed=seed,
                          backend=backend, client=client)
    result, table = report.result, report.comparison
    per_well = table.groupby("well").agg(truth=("truth", "sum"), detected=("detected", "sum"))
    click.echo(per_well.to_string())
    click.echo(
        f"{int(table['within'].sum())}/{len(table)} images ({report.fraction_within:.1%}) within "
        f"±{report.tolerance:.0%} of the true count; mean relative error {table['relative_error'].mean():.2%}"
    )
    click.echo(f"Images: {result.image_store}")
    click.echo(f"Counts: {os.path.join(result.output, 'cell_counts.csv')}")
    click.echo(f"Manifest: {result.manifest}")
    if not result.ok:
        raise CLIError(f"{len(result.failures)} groups failed; see {result.manifest}")


@main.command()
@click.argument("pipeline_file", type=click.Path())
@click.argument("plate", type=click.Path())
@click.option("--output", "-o", required=True, type=click.Path())
@click.option("--backend", type=click.Choice(["zarr", "disk"]), default=None, help="Output format.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier run's results.")
@click.option("--resume", is_flag=True, help="Keep the wells an earlier run completed; run the rest.")
@click.option("--on-error", type=click.Choice(["stop", "continue"]), default="stop", show_default=True)
@click.option("--pattern", default=None, help="Regex with named groups for a plate in no known layout.")
@click.option("--fuse/--no-fuse", default=True, show_default=True,
              help="Run each group's linear run of steps as one task (--no-fuse: one task per step on the dashboard).")
@cluster_options
def run(pipeline_file: str, plate: str, output: str, backend: str | None, overwrite: bool, resume: bool,
        on_error: str, pattern: str | None, fuse: bool, scheduler: str | None, workers: int | None,
        threads_per_worker: int, timeout: float) -> None:
    """Run PIPELINE_FILE (a Python file defining `pipeline`) on PLATE."""
    from hcsgraph.monitor import run_graph
    from hcsgraph.pipeline import PipelineError

    pipeline = load_pipeline_file(pipeline_file)
    index = _open_plate(plate, pattern)
    vfs = VFSConfig(materialization_backend=MaterializationBackend(backend)) if backend else VFSConfig()
    config = GlobalPipelineConfig(vfs=vfs, on_error=OnError(on_error), fuse_tasks=fuse)
    with _client(scheduler, workers, threads_per_worker, timeout) as client:
        _print_dashboard(client)
        try:
            graph = pipeline.compile(index, output, config, overwrite=overwrite, resume=resume)
            result = run_graph(graph, client=client)
        except PipelineError as exc:
            raise CLIError(str(exc)) from exc
    click.echo(result.wells["status"].value_counts().to_string())
    for name in result.special_outputs:
        click.echo(f"{name}: {os.path.join(result.output, name + '.csv')}")
    click.echo(f"Images: {result.image_store}\nManifest: {result.manifest}")
    if not result.ok:
        for failure in result.failures[:10]:
            click.echo(f"FAILED {failure['well']} {failure['step']}: {failure['message']}", err=True)
        raise CLIError(f"{len(result.failures)} groups failed; see {result.manifest}")


@main.command()
@click.argument("plate", type=click.Path())
@click.option("--pattern", default=None, help="Regex with named groups for a plate in no known layout.")
def info(plate: str, pattern: str | None) -> None:
    """Describe PLATE: layout, wells, sites, channels, image shape, gaps."""
    index = _open_plate(plate, pattern)
    click.echo(repr(index))
    table = index.table
    click.echo(f"images: {len(table)}  wells: {len(index.wells)}  sites: {table['site'].nunique()}  "
               f"channels: {table['channel'].nunique()}  z: {table['z'].nunique()}  t: {table['t'].nunique()}")
    click.echo(f"image shape: {tuple(index.image_shape)}  dtype: {index.dtype}")
    names = getattr(index, "channel_names", None)
    if names:
        click.echo("channels: " + ", ".join(f"{k}={v}" for k, v in sorted(names.items())))
    if getattr(index, "pixel_size_um", None):
        click.echo(f"pixel size: {index.pixel_size_um} µm")
    unrecognized = getattr(index, "unrecognized", [])
    if unrecognized:
        click.echo(f"unrecognised files: {len(unrecognized)} (first: {unrecognized[0]})")
    gaps = getattr(index, "gaps", None)
    if gaps is not None and len(gaps):
        click.echo(f"gaps: {len(gaps)}")


@main.command()
@click.argument("plate", type=click.Path())
@click.option("--output", "-o", required=True, type=click.Path(), help="The OME-Zarr plate, e.g. plate.ome.zarr.")
@click.option("--overwrite", is_flag=True)
@click.option("--pattern", default=None, help="Regex with named groups for a plate in no known layout.")
@cluster_options
def convert(plate: str, output: str, overwrite: bool, pattern: str | None, scheduler: str | None,
            workers: int | None, threads_per_worker: int, timeout: float) -> None:
    """Convert a TIFF plate to an OME-Zarr plate, one task per field, in parallel."""
    from hcsgraph.monitor import run_graph
    from hcsgraph.pipeline import Pipeline, PipelineError

    index = _open_plate(plate, pattern)
    config = GlobalPipelineConfig(vfs=VFSConfig(materialization_backend=MaterializationBackend.ZARR))
    with _client(scheduler, workers, threads_per_worker, timeout) as client:
        _print_dashboard(client)
        try:
            graph = Pipeline([], name="convert").compile(index, output, config, overwrite=overwrite)
            result = run_graph(graph, client=client)
        except PipelineError as exc:
            raise CLIError(str(exc)) from exc
    click.echo(f"Wrote {result.image_store}")
    if not result.ok:
        raise CLIError(f"{len(result.failures)} fields failed; see {result.manifest}")


if __name__ == "__main__":  # pragma: no cover
    main()
