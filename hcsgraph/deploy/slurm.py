"""Workers as SLURM jobs: a small layer over ``dask_jobqueue.SLURMCluster`` (``pip install hcsgraph[slurm]``).

The scheduler runs in the client's process; each SLURM job runs ``cores // threads_per_worker``
worker processes (one with ``gpu=True``: the job asks for one GPU with ``--gres=gpu:1`` and its
worker offers ``--resources GPU=1``, so hcsgraph's GPU tasks go there). The job script runs the
client's own Python (``sys.executable``), so the client's environment must be on a file system
the compute nodes share, like the plates and the outputs (see docs/cluster.md).

    from hcsgraph.deploy.slurm import SlurmOptions, slurm_cluster

    with slurm_cluster(SlurmOptions(jobs=4, cores=8, memory="32GB", queue="compute")) as cluster:
        with Client(cluster):
            graph.compute()

:func:`slurm_client_options` adds the ``--slurm*`` options to a click command and hands it one
``slurm`` argument (a :class:`SlurmOptions`, or None without ``--slurm``); :func:`slurm_client`
is the client the command line runs on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import click

__all__ = [
    "SlurmError",
    "SlurmOptions",
    "cluster_kwargs",
    "describe",
    "job_script",
    "slurm_client",
    "slurm_client_options",
    "slurm_cluster",
]

INSTALL_HINT = "pip install 'hcsgraph[slurm]' (dask-jobqueue)"


class SlurmError(RuntimeError):
    """The worker jobs could not be submitted or did not start."""


@dataclass(frozen=True)
class SlurmOptions:
    """What each worker job asks SLURM for, and how many jobs to submit.

    ``extra``: more ``#SBATCH`` options, e.g. ``("--account=lab", "--constraint=skylake")``.
    ``prologue``: shell lines run in the job before the worker starts (``module load ...``).
    ``interface``: the network interface of the scheduler and the workers (``ib0``; ``lo`` on one
    machine). ``wait``: seconds to wait for every job's workers before giving up.
    ``cluster``: further keywords for ``SLURMCluster`` (``account``, ``python``, ``scheduler_options``...).
    """

    jobs: int = 1
    queue: str | None = None
    cores: int = 1
    memory: str = "4GB"
    walltime: str = "01:00:00"
    extra: tuple[str, ...] = ()
    gpu: bool = False
    threads_per_worker: int = 1
    interface: str | None = None
    prologue: tuple[str, ...] = ()
    log_directory: str | None = None
    wait: float = 300.0
    cluster: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("jobs", "cores", "threads_per_worker"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SlurmOptions.{name} must be at least 1, got {getattr(self, name)!r}")
        if self.threads_per_worker > self.cores:
            raise ValueError(f"threads_per_worker={self.threads_per_worker} is more than the job's cores={self.cores}")

    @property
    def processes(self) -> int:
        """Worker processes per job: one per GPU job, else ``cores // threads_per_worker``."""
        return 1 if self.gpu else max(1, self.cores // self.threads_per_worker)

    @property
    def n_workers(self) -> int:
        """Worker processes in all once every job runs."""
        return self.jobs * self.processes


def cluster_kwargs(options: SlurmOptions) -> dict[str, Any]:
    """The keywords ``SLURMCluster`` is started with for ``options``."""
    directives = list(options.extra)
    worker_args: list[str] = []
    if options.gpu:
        directives.append("--gres=gpu:1")
        worker_args += ["--resources", "GPU=1"]
    kwargs: dict[str, Any] = {
        "cores": options.cores,
        "processes": options.processes,
        "memory": options.memory,
        "walltime": options.walltime,
        "job_extra_directives": directives,
        "worker_extra_args": worker_args,
        "job_script_prologue": list(options.prologue),
    }
    for name in ("queue", "interface", "log_directory"):
        if getattr(options, name) is not None:
            kwargs[name] = getattr(options, name)
    return {**kwargs, **options.cluster}


def _slurm_cluster_class() -> Any:
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as exc:
        raise ImportError(f"running on SLURM needs dask-jobqueue: {INSTALL_HINT}") from exc
    return SLURMCluster


def job_script(options: SlurmOptions) -> str:
    """The job script each worker job runs (starts a throwaway scheduler to render it)."""
    with _slurm_cluster_class()(**cluster_kwargs(options)) as cluster:
        return cluster.job_script()


def _test_submission(script: str) -> None:
    """``sbatch --test-only``: SLURM's verdict on the job script before any job is queued."""
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="hcsgraph-slurm-", delete=False) as fh:
        fh.write(script)
    try:
        done = subprocess.run(["sbatch", "--test-only", fh.name], capture_output=True, text=True, timeout=60)
    except FileNotFoundError as exc:
        raise SlurmError("sbatch is not on PATH: run on a SLURM login node (or a machine with the SLURM "
                         "client commands)") from exc
    finally:
        os.unlink(fh.name)
    if done.returncode != 0:
        said = " ".join(line.removeprefix("sbatch: error: ") for line in done.stderr.splitlines() if line.strip())
        raise SlurmError(f"SLURM refuses the worker job: {said or 'sbatch --test-only failed'}")


def _job_states(cluster: Any) -> str:
    """``job ID: STATE (REASON)`` of each of the cluster's jobs, as squeue tells them."""
    ids = [str(job.job_id) for job in cluster.workers.values() if getattr(job, "job_id", None)]
    if not ids:
        return "no job was accepted (see the log for sbatch's error)"
    try:
        done = subprocess.run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i %T %r"], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"jobs {', '.join(ids)} (squeue failed: {exc})"
    states = []
    for line in sorted(done.stdout.splitlines(), key=lambda text: (len(text.split()[0]), text)):
        job, state, *reason = line.split(maxsplit=2)
        why = f" ({reason[0]})" if reason and reason[0] != "None" else ""
        states.append(f"job {job}: {state}{why}")
    return "; ".join(states) or f"jobs {', '.join(ids)} are gone (see their logs)"


def _register_plugins(client: Any, gpu: bool) -> None:
    from hcsgraph.workers import HostAllocatorPlugin

    allocator = HostAllocatorPlugin()
    client.register_plugin(allocator, name=allocator.name)
    if gpu:
        from hcsgraph.gpu import GPUWorkerPlugin

        plugin = GPUWorkerPlugin()
        client.register_plugin(plugin, name=plugin.name)


@contextlib.contextmanager
def slurm_cluster(options: SlurmOptions | None = None, **fields: Any) -> Iterator[Any]:
    """A ``SLURMCluster`` whose ``options.jobs`` worker jobs all run, with hcsgraph's worker plugins.

    ``fields`` set or override :class:`SlurmOptions` fields. On exit the cluster closes and its
    jobs are cancelled (``scancel``). Raises :class:`SlurmError` when SLURM refuses the job script
    or the workers do not all start within ``options.wait`` seconds.
    """
    options = dataclasses.replace(options or SlurmOptions(), **fields)
    cls = _slurm_cluster_class()
    from distributed import Client

    with cls(**cluster_kwargs(options)) as cluster:
        _test_submission(cluster.job_script())
        cluster.scale(jobs=options.jobs)
        with Client(cluster, set_as_default=False) as client:
            try:
                client.wait_for_workers(options.n_workers, timeout=options.wait)
            except TimeoutError as exc:
                started = len(client.scheduler_info(n_workers=-1)["workers"])
                raise SlurmError(f"{started} of {options.n_workers} SLURM workers started within "
                                 f"{options.wait:g} s: {_job_states(cluster)}") from exc
            _register_plugins(client, options.gpu)
        yield cluster


def describe(options: SlurmOptions) -> str:
    """One line for the terminal: what is being submitted."""
    parts = [f"{options.jobs} job(s)", f"{options.cores} core(s)", options.memory, options.walltime]
    if options.queue:
        parts.append(f"partition {options.queue}")
    if options.gpu:
        parts.append("1 GPU each")
    extra = f" ({shlex.join(options.extra)})" if options.extra else ""
    return f"SLURM: {', '.join(parts)}{extra} -> {options.n_workers} worker(s)"


@contextlib.contextmanager
def slurm_client(options: SlurmOptions) -> Iterator[Any]:
    """A Client on a :func:`slurm_cluster` (what ``hcsgraph run --slurm`` runs on); setup failures as CLIErrors."""
    from distributed import Client

    from hcsgraph.cli_errors import CLIError

    click.echo(f"{describe(options)}; waiting for them to start")
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(slurm_cluster(options))
        except (SlurmError, ImportError) as exc:
            raise CLIError(str(exc)) from exc
        with Client(cluster) as client:
            yield client


_OPTIONS = [
    click.option("--slurm", is_flag=True,
                 help="Run on workers started as SLURM jobs (dask-jobqueue: pip install 'hcsgraph[slurm]').",),
    click.option("--slurm-queue", default=None, help="SLURM partition of the worker jobs (default: SLURM's)."),
    click.option("--slurm-cores", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Cores per job; the job runs cores / --threads-per-worker worker processes."),
    click.option("--slurm-memory", default="4GB", show_default=True, help="Memory per job."),
    click.option("--slurm-walltime", default="01:00:00", show_default=True, help="Time limit of each job."),
    click.option("--slurm-jobs", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Worker jobs to submit; the run starts once all of them run."),
    click.option("--slurm-gpu", is_flag=True,
                 help="Each job asks for one GPU (--gres=gpu:1) and runs one worker offering GPU=1."),
    click.option("--slurm-extra", multiple=True, metavar="OPTION",
                 help="An extra #SBATCH option, e.g. --slurm-extra=--account=lab (repeatable)."),
    click.option("--slurm-prologue", multiple=True, metavar="LINE",
                 help="A shell line run in each job before the worker, e.g. 'module load cuda' (repeatable)."),
    click.option("--slurm-interface", default=None,
                 help="Network interface of scheduler and workers, e.g. ib0 (lo: all on this machine)."),
    click.option("--slurm-log-directory", type=click.Path(file_okay=False), default=None,
                 help="Folder for the jobs' output (default: SLURM's, the current folder)."),
    click.option("--slurm-wait", type=click.FloatRange(min=0, min_open=True), default=300.0, show_default=True,
                 help="Seconds to wait for every job's workers to start."),
]
_NAMES = ("slurm_queue", "slurm_cores", "slurm_memory", "slurm_walltime", "slurm_jobs", "slurm_gpu", "slurm_extra",
          "slurm_prologue", "slurm_interface", "slurm_log_directory", "slurm_wait")


def slurm_client_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--slurm`` and ``--slurm-*`` to a click command; it receives them as one ``slurm`` argument.

    ``slurm`` is a :class:`SlurmOptions` with ``--slurm``, else None. ``--slurm`` excludes
    ``--scheduler`` and ``--workers``; a ``--slurm-*`` option without ``--slurm`` is an error.
    """

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        from hcsgraph.cli_errors import CLIError

        enabled = kwargs.pop("slurm")
        values = {name: kwargs.pop(name) for name in _NAMES}
        ctx = click.get_current_context()
        given = [name for name in _NAMES if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
        if not enabled:
            if given:
                raise CLIError(f"--{given[0].replace('_', '-')} needs --slurm")
            return func(*args, slurm=None, **kwargs)
        for other in ("scheduler", "workers"):
            if kwargs.get(other) is not None:
                raise CLIError(f"--slurm and --{other} exclude each other: --slurm starts the scheduler here and "
                               "the workers as SLURM jobs (--slurm-jobs, --slurm-cores)")
        try:
            options = SlurmOptions(
                jobs=values["slurm_jobs"], queue=values["slurm_queue"], cores=values["slurm_cores"],
                memory=values["slurm_memory"], walltime=values["slurm_walltime"], extra=values["slurm_extra"],
                gpu=values["slurm_gpu"], threads_per_worker=kwargs.get("threads_per_worker") or 1,
                interface=values["slurm_interface"], prologue=values["slurm_prologue"],
                log_directory=values["slurm_log_directory"], wait=values["slurm_wait"],
            )
        except ValueError as exc:
            raise CLIError(f"--slurm: {exc}") from exc
        return func(*args, slurm=options, **kwargs)

    for option in reversed(_OPTIONS):
        command = option(command)
    return command
