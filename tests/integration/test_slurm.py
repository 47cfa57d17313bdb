"""``hcsgraph run --slurm`` on a single-node SLURM started for the test (munge, slurmctld, slurmd).

The daemons run in the foreground as children of the test, on 127.0.0.1 with ports of their own and
a munge socket of their own (so a SLURM or munge already on the machine is left alone), and are
stopped by their PIDs afterwards, after every job is cancelled.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import PIPELINE_FILE, Reference, check, free_port, run_cli

pytestmark = pytest.mark.integration

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "setpriv")

SLURM_CONF = """\
ClusterName=hcsgraphtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Slurm:
    """A running single-node SLURM: its folder, environment and daemons."""

    root: Path
    env: dict[str, str]
    daemons: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __call__(self, *args: str) -> str:
        done = subprocess.run(args, capture_output=True, text=True, env=self.env, timeout=60)
        return done.stdout.strip() if done.returncode == 0 else ""

    def jobs(self) -> list[str]:
        return self("squeue", "-h", "-o", "%i %T").splitlines()

    def start(self, name: str, *command: str) -> None:
        log = open(self.root / "log" / f"{name}.out", "w")  # noqa: SIM115 - closed with the process
        self.daemons[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                              start_new_session=True)
        log.close()

    def stop(self) -> list[str]:
        """Cancel every job, then SIGTERM (SIGKILL after 30 s) each daemon by its PID; returns what refused."""
        if "slurmctld" in self.daemons:
            self("scancel", "--user", str(os.getuid()))
            deadline = time.monotonic() + 30
            while self.jobs() and time.monotonic() < deadline:
                time.sleep(0.5)
        stubborn = []
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.daemons.pop(name, None)
            if proc is None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stubborn.append(name)
                proc.kill()
                proc.wait(timeout=30)
        return stubborn


def _memory_mb() -> int:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)


@pytest.fixture(scope="module")
def slurm() -> Iterator[Slurm]:
    """munged, slurmctld and slurmd started in the foreground; idle node 'debug' partition; stopped afterwards."""
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed (pip install 'hcsgraph[slurm]')")
    missing = [name for name in DAEMONS if not shutil.which(name)]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing; make test installs slurm-wlm and "
                    "munge when run as root)")
    if os.geteuid() != 0 or not Path("/etc/munge/munge.key").exists():
        pytest.skip("a single-node SLURM needs root and the munge key /etc/munge/munge.key")
    # munged checks that every folder above its socket is searchable by all: not under pytest's 0700 tmp.
    root = Path(tempfile.mkdtemp(prefix="hcsgraph-slurm-"))
    root.chmod(0o755)
    for sub in ("state", "spool", "run", "log", "munge", "jobs"):
        (root / sub).mkdir()
    shutil.chown(root / "munge", "munge", "munge")
    host = socket.gethostname()
    conf = root / "slurm.conf"
    conf.write_text(SLURM_CONF.format(host=host, root=root, munge_socket=root / "munge" / "munge.sock",
                                      ctld_port=free_port(), slurmd_port=free_port(), memory_mb=_memory_mb()))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = Slurm(root, env)
    try:
        munge = root / "munge"
        cluster.start("munged", "setpriv", "--reuid=munge", "--regid=munge", "--init-groups", "munged", "-F",
                      f"--socket={munge / 'munge.sock'}", f"--pid-file={munge / 'munged.pid'}",
                      f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'munged.seed'}")
        _wait(lambda: (munge / "munge.sock").exists(), 30, cluster, "munged did not create its socket")
        cluster.start("slurmctld", "slurmctld", "-D", "-c", "-i", "-f", str(conf))
        cluster.start("slurmd", "slurmd", "-D", "-f", str(conf))
        _wait(lambda: cluster("sinfo", "-h", "-o", "%T") == "idle", 60, cluster, "the node did not become idle")
        yield cluster
    finally:
        jobs_left = cluster.jobs() if "slurmctld" in cluster.daemons else []
        stubborn = cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert not jobs_left, f"jobs left behind: {jobs_left}"
    assert not stubborn, f"daemons that needed SIGKILL: {stubborn}"


def _wait(ready, timeout: float, cluster: Slurm, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        dead = [name for name, proc in cluster.daemons.items() if proc.poll() is not None]
        if dead or time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted((cluster.root / "log").glob("*")))
            raise AssertionError(f"{message} (exited: {dead})\n{logs}")
        time.sleep(0.3)


def test_run_with_slurm_gives_the_local_bytes(slurm: Slurm, reference: Reference, same_as_reference,
                                              tmp_path: Path) -> None:
    out = reference.data / "out-slurm"
    logs = slurm.root / "jobs"
    # the scheduler runs in the client; its dashboard on 127.0.0.1 too
    env = {**slurm.env, "DASK_JOBQUEUE__SLURM__SCHEDULER_OPTIONS": "{'dashboard_address': '127.0.0.1:0'}"}
    done = run_cli("run", str(PIPELINE_FILE), str(reference.plate), "-o", str(out), "--slurm", "--slurm-jobs", "2",
                   "--slurm-cores", "1", "--slurm-memory", "1GB", "--slurm-walltime", "00:10:00",
                   "--slurm-queue", "debug", "--slurm-interface", "lo", "--slurm-log-directory", str(logs),
                   "--slurm-wait", "120", env=env, cwd=tmp_path)
    check(done, "hcsgraph run --slurm")
    assert "SLURM: 2 job(s)" in done.stdout
    same_as_reference(out)
    assert len(list(logs.glob("*.out"))) == 2, "two worker jobs ran"
    assert slurm.jobs() == [], "the worker jobs were cancelled when the run ended"


def test_a_job_slurm_refuses_is_one_clear_error(slurm: Slurm, reference: Reference, tmp_path: Path) -> None:
    done = run_cli("run", str(PIPELINE_FILE), str(reference.plate), "-o", str(tmp_path / "o"), "--slurm",
                   "--slurm-queue", "no-such-partition", "--slurm-interface", "lo", env=slurm.env, cwd=tmp_path)
    assert done.returncode == 2
    assert "SLURM refuses the worker job" in done.stderr and "partition" in done.stderr, done.stderr
    assert slurm.jobs() == []
