"""The --slurm options and the SLURMCluster they make, without a SLURM (the job script is only rendered)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from hcsgraph.cli_errors import Group
from hcsgraph.deploy.slurm import SlurmOptions, cluster_kwargs, describe, job_script, slurm_client_options


def test_cpu_jobs_run_one_single_threaded_worker_per_core() -> None:
    options = SlurmOptions(jobs=3, cores=4, memory="16GB", queue="compute", extra=("--account=lab",))
    kwargs = cluster_kwargs(options)
    assert (kwargs["cores"], kwargs["processes"], options.n_workers) == (4, 4, 12)
    assert kwargs["job_extra_directives"] == ["--account=lab"] and kwargs["worker_extra_args"] == []
    assert kwargs["queue"] == "compute" and "interface" not in kwargs
    assert describe(options) == ("SLURM: 3 job(s), 4 core(s), 16GB, 01:00:00, partition compute (--account=lab) "
                                 "-> 12 worker(s)")
    assert SlurmOptions(cores=4, threads_per_worker=2).processes == 2


def test_gpu_jobs_ask_for_a_gpu_and_offer_the_gpu_resource() -> None:
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (pip install 'hcsgraph[slurm]')")
    options = SlurmOptions(cores=8, gpu=True, prologue=("module load cuda",), interface="lo")
    assert options.processes == 1
    script = job_script(options)
    assert "#SBATCH --gres=gpu:1" in script and "#SBATCH --cpus-per-task=8" in script
    assert "--resources GPU=1" in script and "--nthreads 8" in script and "--interface lo" in script
    assert script.index("module load cuda") < script.index("distributed.cli.dask_worker")


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        SlurmOptions(jobs=0)
    with pytest.raises(ValueError, match="more than the job's cores"):
        SlurmOptions(cores=1, threads_per_worker=2)


@click.group(cls=Group)
def main() -> None:
    """A command line with one command that takes the --slurm options."""


@main.command()
@click.option("--scheduler", default=None)
@click.option("--workers", type=int, default=None)
@click.option("--threads-per-worker", type=int, default=1)
@slurm_client_options
def run(scheduler: str | None, workers: int | None, threads_per_worker: int, slurm: SlurmOptions | None) -> None:
    click.echo(repr(slurm))


def _invoke(*args: str):
    return CliRunner().invoke(main, ["run", *args])


def test_the_options_reach_the_command_as_one_slurm_argument() -> None:
    assert _invoke().output.strip() == "None"
    done = _invoke("--slurm", "--slurm-jobs", "2", "--slurm-cores", "4", "--threads-per-worker", "2",
                   "--slurm-extra=--account=lab", "--slurm-extra", "--constraint=skylake", "--slurm-gpu")
    assert done.exit_code == 0, done.output
    assert ("SlurmOptions(jobs=2, queue=None, cores=4, memory='4GB', walltime='01:00:00', "
            "extra=('--account=lab', '--constraint=skylake'), gpu=True, threads_per_worker=2") in done.output


@pytest.mark.parametrize(("args", "message"), [
    (["--slurm-jobs", "2"], "--slurm-jobs needs --slurm"),
    (["--slurm", "--scheduler", "tcp://127.0.0.1:8786"], "--slurm and --scheduler exclude each other"),
    (["--slurm", "--workers", "2"], "--slurm and --workers exclude each other"),
    (["--slurm", "--threads-per-worker", "4"], "--slurm: threads_per_worker=4 is more than the job's cores=1"),
])
def test_option_mistakes_are_one_error_line(args: list[str], message: str) -> None:
    done = _invoke(*args)
    assert done.exit_code == 2
    assert message in done.output
