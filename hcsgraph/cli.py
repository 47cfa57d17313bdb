"""The ``hcsgraph`` command: demo, run, info, convert.

Every failure is one ``Error:`` line with exit code 2. While a command runs, warnings, worker
messages and tracebacks go to a log file that the error line names (``--verbose`` shows them
instead); see :mod:`hcsgraph.cli_errors`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from hcsgraph.cli_errors import CLIError, Group, captured, cli_words, note_traceback, verbose_option
from hcsgraph.config import (
    OME_ZARR_VERSIONS,
    GlobalPipelineConfig,
    MaterializationBackend,
    OnError,
    VFSConfig,
    ZarrConfig,
)
from hcsgraph.deploy.slurm import SlurmOptions, slurm_client_options

__all__ = ["CLIError", "load_pipeline_file", "main"]

EXIT_STATUS = ("Exit status: 0 when every well completed; 2 for any error, including wells that failed "
               "(the other wells' results are kept, run.json lists the failures). An error is one line; "
               "warnings, worker messages and tracebacks go to the log file it names (-v shows them instead).")


@contextlib.contextmanager
def _client(scheduler: str | None, workers: int | None, threads: int, timeout: float,
            slurm: SlurmOptions | None = None) -> Iterator[Any]:
    """A Client on ``scheduler`` (reached within ``timeout`` s), on SLURM worker jobs, or on a local cluster."""
    if slurm is not None:
        from hcsgraph.deploy.slurm import slurm_client

        with slurm_client(slurm) as client:
            yield client
        return
    if scheduler:
        from hcsgraph.cli_scheduler import connect

        with connect(scheduler, timeout) as client:
            yield client
        return
    from distributed import Client

    from hcsgraph.gpu import local_cluster

    n = workers or max(1, (os.cpu_count() or 1))
    with local_cluster(n_workers=n, threads_per_worker=threads) as cluster, Client(cluster) as client:
        yield client


def _check_workers(client: Any, pipeline: Any) -> None:
    """Same hcsgraph, Python and dask on client and workers, and the pipeline's array libraries: one line if not."""
    from hcsgraph.deploy.versions import ClusterMismatchError, check_cluster, pipeline_memory_types

    try:
        check_cluster(client, pipeline_memory_types(pipeline))
    except ClusterMismatchError as exc:
        raise CLIError(str(exc)) from exc


def _print_dashboard(client: Any) -> None:
    from hcsgraph.dashboard import register_plate_page
    from hcsgraph.monitor import dashboard_link

    link = dashboard_link(client)
    if link:
        click.echo(f"Dashboard: {link}")
        plate = register_plate_page(client)  # once per scheduler; local_cluster() has already done it
        if plate:
            click.echo(f"Plate page: {plate}")


def _open_plate(path: str, pattern: str | None = None) -> Any:
    from hcsgraph.plate import open_plate

    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise CLIError(f"--pattern {pattern!r} is not a regular expression: {exc}") from exc
    try:
        return open_plate(path, pattern=pattern) if pattern else open_plate(path)
    except Exception as exc:  # noqa: BLE001 - missing paths, unrecognised layouts etc.
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
        # Workers cannot import this file by name: ship its functions by value.
        cloudpickle.register_pickle_by_value(module)
        pipeline = getattr(module, "pipeline", None)
        if pipeline is None and callable(getattr(module, "build_pipeline", None)):
            pipeline = module.build_pipeline()
    except Exception as exc:  # noqa: BLE001
        note_traceback(exc)
        raise CLIError(f"pipeline file {path} failed to load: {type(exc).__name__}: {exc}", log=True) from exc
    if not isinstance(pipeline, Pipeline):
        raise CLIError(f"pipeline file {path} must define `pipeline = Pipeline([...])` or `build_pipeline()`")
    return pipeline


def _check_scheduler(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from hcsgraph.cli_scheduler import check_address

    return check_address(value)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hcsgraph")
def main() -> None:
    """High-content-screening pipelines as Dask graphs."""


_cluster_options = [
    click.option("--scheduler", default=None, callback=_check_scheduler,
                 help="Address of a running Dask scheduler, e.g. tcp://10.0.0.1:8786 (default: a local cluster)."),
    click.option("--workers", type=click.IntRange(min=1), default=None,
                 help="Worker processes of the local cluster (default: cores)."),
    click.option("--threads-per-worker", type=click.IntRange(min=1), default=1, show_default=True),
    click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
                 help="Seconds to connect to the scheduler and complete its handshake."),
    verbose_option,
]

_ome_zarr_option = click.option(
    "--ome-zarr-version", type=click.Choice(OME_ZARR_VERSIONS), default=None,
    help="OME-Zarr version of the images written: 0.5 (Zarr v3) or 0.4 (Zarr v2). "
         "Default: 0.5, or with --resume the version of the output being resumed.",
)


def cluster_options(func: Any) -> Any:
    """The options that choose the cluster: --scheduler or --workers/--threads-per-worker, --timeout, -v."""
    for option in reversed(_cluster_options):
        func = option(func)
    return func


def _existing_ome_zarr_version(output: str, backend: MaterializationBackend) -> str | None:
    """The OME-Zarr version of the image store already in ``output``, if there is one."""
    if backend is not MaterializationBackend.ZARR:
        return None
    from hcsgraph.pipeline.layout import ZARR_STORE

    root = os.path.abspath(output)
    for store in (root, os.path.join(root, ZARR_STORE)):
        if os.path.isfile(os.path.join(store, "zarr.json")):
            return "0.5"
        if os.path.isfile(os.path.join(store, ".zattrs")) or os.path.isfile(os.path.join(store, ".zgroup")):
            return "0.4"
    return None


def _zarr_config(version: str | None, output: str, resume: bool, backend: MaterializationBackend) -> ZarrConfig:
    existing = _existing_ome_zarr_version(output, backend) if resume else None
    if version and existing and version != existing:
        raise CLIError(f"output {output} holds OME-Zarr {existing} images; --resume cannot add {version} images "
                       f"to them: drop --ome-zarr-version, or pass --overwrite instead of --resume")
    return ZarrConfig(ome_zarr_version=version or existing or ZarrConfig().ome_zarr_version)


def _check_flags(overwrite: bool, resume: bool) -> None:
    if overwrite and resume:
        raise CLIError("--overwrite and --resume exclude each other: --overwrite replaces the earlier results, "
                       "--resume keeps its finished wells")


def _compile(pipeline: Any, index: Any, output: str, config: GlobalPipelineConfig, *, overwrite: bool,
             resume: bool, pipeline_file: str | None = None) -> Any:
    """``pipeline.compile``, its errors in the command line's words."""
    from hcsgraph.pipeline import OutputExistsError, PipelineError

    try:
        return pipeline.compile(index, output, config, overwrite=overwrite, resume=resume)
    except OutputExistsError as exc:
        if not exc.replaceable:  # files hcsgraph did not write: nothing to rephrase
            raise CLIError(cli_words(str(exc), pipeline_file)) from exc
        detail = f" ({', '.join(exc.existing[:3])})" if exc.existing else ""
        raise CLIError(f"output {output} already holds results{detail}; pass --overwrite to replace it or "
                       "--resume to finish the missing wells") from exc
    except PipelineError as exc:
        raise CLIError(cli_words(str(exc), pipeline_file)) from exc


def _compute(graph: Any, client: Any) -> Any:
    """Run ``graph`` with a progress bar; a failure in stop mode as one line."""
    from hcsgraph.monitor import run_graph
    from hcsgraph.pipeline import PipelineError, StepExecutionError

    try:
        return run_graph(graph, client=client)
    except StepExecutionError as exc:
        raise CLIError(f"{cli_words(str(exc))}; the run stopped (--on-error continue runs past failures)",
                       log=True) from exc
    except PipelineError as exc:
        raise CLIError(cli_words(str(exc)), log=True) from exc


def _report_failures(result: Any) -> None:
    """Print the failed groups and stop with one line when the run did not complete every well."""
    if result.ok:
        return
    for failure in result.failures[:10]:
        group = f" ({failure['group']})" if failure.get("group") else ""
        click.echo(f"FAILED {failure['well']}{group} step {failure['step']!r}: {failure['message']}")
    if len(result.failures) > 10:
        click.echo(f"... and {len(result.failures) - 10} more in {result.manifest}")
    wells = result.wells
    failed = int((wells["status"] == "failed").sum()) if len(wells) else 0
    failed = failed or len({f["well"] for f in result.failures})
    raise CLIError(f"{failed} of {len(wells)} wells failed ({len(result.failures)} groups; see {result.manifest}); "
                   "--resume reruns only the unfinished wells", log=True)


@main.command(epilog=EXIT_STATUS)
@click.option("--wells", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--sites", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--channels", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--size", type=click.IntRange(min=16), default=512, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--backend", type=click.Choice(["zarr", "disk"]), default="zarr", show_default=True)
@click.option("--output", "-o", type=click.Path(), default=None, help="Work directory (default: a temporary one).")
@cluster_options
@captured()
def demo(wells: int, sites: int, channels: int, size: int, seed: int, backend: str, output: str | None,
         scheduler: str | None, workers: int | None, threads_per_worker: int, timeout: float) -> None:
    """Generate a plate, count its cells on a local cluster and compare with the ground truth."""
    from hcsgraph.demo import run_demo

    workdir = Path(output) if output else Path(tempfile.mkdtemp(prefix="hcsgraph-demo-"))
    click.echo(f"Plate: {wells} wells x {sites} sites x {channels} channels, {size}x{size} uint16 in {workdir}")
    with _client(scheduler, workers or 2, threads_per_worker, timeout) as client:
        _print_dashboard(client)
        try:
            report = run_demo(workdir, wells=wells, sites=sites, channels=channels, size=size, seed=seed,
                              backend=backend, client=client)
        except Exception as exc:
            from hcsgraph.pipeline import PipelineError

            if isinstance(exc, PipelineError):
                raise CLIError(cli_words(str(exc)), log=True) from exc
            raise
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
    _report_failures(result)


@main.command(epilog=EXIT_STATUS)
@click.argument("pipeline_file", type=click.Path())
@click.argument("plate", type=click.Path())
@click.option("--output", "-o", required=True, type=click.Path())
@click.option("--backend", type=click.Choice(["zarr", "disk"]), default=None, help="Output format (default: zarr).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier run's results.")
@click.option("--resume", is_flag=True, help="Keep the wells an earlier run completed; run the rest.")
@click.option("--on-error", type=click.Choice(["stop", "continue"]), default="stop", show_default=True,
              help="stop: end the run at the first failing well; continue: run the other wells.")
@click.option("--pattern", default=None, help="Regex with named groups for a plate in no known layout.")
@click.option("--fuse/--no-fuse", default=True, show_default=True,
              help="Run each group's linear run of steps as one task (--no-fuse: one task per step on the dashboard).")
@_ome_zarr_option
@cluster_options
@slurm_client_options
@captured()
def run(pipeline_file: str, plate: str, output: str, backend: str | None, overwrite: bool, resume: bool,
        on_error: str, pattern: str | None, fuse: bool, ome_zarr_version: str | None, scheduler: str | None,
        workers: int | None, threads_per_worker: int, timeout: float, slurm: SlurmOptions | None) -> None:
    """Run PIPELINE_FILE (a Python file defining `pipeline`) on PLATE."""
    _check_flags(overwrite, resume)
    pipeline = load_pipeline_file(pipeline_file)
    index = _open_plate(plate, pattern)
    materialization = MaterializationBackend(backend or VFSConfig().materialization_backend)
    config = GlobalPipelineConfig(
        vfs=VFSConfig(materialization_backend=materialization),
        zarr=_zarr_config(ome_zarr_version, output, resume, materialization),
        on_error=OnError(on_error),
        fuse_tasks=fuse,
    )
    with _client(scheduler, workers, threads_per_worker, timeout, slurm) as client:
        _print_dashboard(client)
        _check_workers(client, pipeline)
        graph = _compile(pipeline, index, output, config, overwrite=overwrite, resume=resume,
                         pipeline_file=pipeline_file)
        result = _compute(graph, client)
    click.echo(result.wells["status"].value_counts().to_string())
    for name in result.special_outputs:
        click.echo(f"{name}: {os.path.join(result.output, name + '.csv')}")
    click.echo(f"Images: {result.image_store}\nManifest: {result.manifest}")
    _report_failures(result)


def _physical(value: float | None, unit: str) -> str:
    """``0.65 µm`` / ``unknown``: a pixel size, z spacing or time interval as ``info`` shows it."""
    return "unknown" if value is None else f"{value:g} {unit}"


@main.command()
@click.argument("plate", type=click.Path())
@click.option("--pattern", default=None, help="Regex with named groups for a plate in no known layout.")
@verbose_option
@captured(announce=False)
def info(plate: str, pattern: str | None) -> None:
    """Describe PLATE: layout, wells, sites, channels, image shape, gaps."""
    index = _open_plate(plate, pattern)
    try:
        shape, dtype = tuple(index.image_shape), index.dtype  # read now: the summary line shows the shape
    except Exception as exc:  # noqa: BLE001 - an unreadable first image
        note_traceback(exc)
        text = str(exc) if "image shape" in str(exc) else f"cannot read the image shape: {type(exc).__name__}: {exc}"
        raise CLIError(text if plate in text else f"plate {plate}: {text}", log=True) from exc
    click.echo(repr(index))
    table = index.table
    click.echo(f"images: {len(table)}  wells: {len(index.wells)}  sites: {table['site'].nunique()}  "
               f"channels: {table['channel'].nunique()}  z: {table['z'].nunique()}  t: {table['t'].nunique()}")
    click.echo(f"image shape: {shape}  dtype: {dtype}")
    names = getattr(index, "channel_names", None)
    colours = getattr(index, "channel_colors", None) or {}
    if names:
        click.echo("channels: " + ", ".join(f"{k}={v}" + (f" (#{colours[k]})" if k in colours else "")
                                            for k, v in sorted(names.items())))
    click.echo(f"pixel size: {_physical(getattr(index, 'pixel_size_um', None), 'µm')}")
    if len(index.z_planes) > 1 or getattr(index, "z_spacing_um", None) is not None:
        click.echo(f"z spacing: {_physical(getattr(index, 'z_spacing_um', None), 'µm')}")
    if len(index.timepoints) > 1 or getattr(index, "time_interval_s", None) is not None:
        click.echo(f"time interval: {_physical(getattr(index, 'time_interval_s', None), 's')}")
    unrecognized = getattr(index, "unrecognized", [])
    if unrecognized:
        click.echo(f"unrecognised files: {len(unrecognized)} (first: {unrecognized[0]})")
    gaps = getattr(index, "gaps", None)
    if gaps is not None and len(gaps):
        click.echo(f"gaps: {len(gaps)}")
    problems = [p for p in getattr(index, "problems", []) if not str(p).startswith("unrecognized file")]
    if problems:  # also logged as warnings while the plate was read: shown here instead
        click.echo(f"problems: {len(problems)}")
        for problem in problems[:10]:
            click.echo(f"  {problem}")


@main.command(epilog=EXIT_STATUS)
@click.argument("plate", type=click.Path())
@click.option("--output", "-o", required=True, type=click.Path(), help="The OME-Zarr plate, e.g. plate.ome.zarr.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier conversion.")
@click.option("--resume", is_flag=True, help="Keep the wells an earlier conversion completed; convert the rest.")
@click.option("--pattern", default=None, help="Regex with named groups for a plate in no known layout.")
@_ome_zarr_option
@cluster_options
@captured()
def convert(plate: str, output: str, overwrite: bool, resume: bool, pattern: str | None,
            ome_zarr_version: str | None, scheduler: str | None, workers: int | None, threads_per_worker: int,
            timeout: float) -> None:
    """Convert a TIFF plate to an OME-Zarr plate, one task per field, in parallel."""
    from hcsgraph.pipeline import Pipeline

    _check_flags(overwrite, resume)
    index = _open_plate(plate, pattern)
    config = GlobalPipelineConfig(
        vfs=VFSConfig(materialization_backend=MaterializationBackend.ZARR),
        zarr=_zarr_config(ome_zarr_version, output, resume, MaterializationBackend.ZARR),
    )
    with _client(scheduler, workers, threads_per_worker, timeout) as client:
        _print_dashboard(client)
        graph = _compile(Pipeline([], name="convert"), index, output, config, overwrite=overwrite, resume=resume)
        result = _compute(graph, client)
    skipped = int((result.wells["status"] == "skipped").sum()) if len(result.wells) else 0
    if skipped:
        click.echo(f"Kept {skipped} well{'s' if skipped != 1 else ''} an earlier conversion completed")
    click.echo(f"Wrote {result.image_store}")
    _report_failures(result)


if __name__ == "__main__":  # pragma: no cover
    main()
