"""Fixtures of the cluster tests: a tiny plate, a local reference run, the CLI as a subprocess, free ports.

The tests marked ``integration`` start real services (podman containers, a single-node SLURM) on
127.0.0.1 only, skip with their reason where the tools are missing, and leave nothing running.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PIPELINE_FILE = REPO / "examples" / "cell_count.py"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: starts real services (podman, SLURM); skips where they are missing")


def output_digest(root: Path) -> dict[str, str]:
    """md5 of every image and table file under an output (run.json and .hcsgraph/ hold times and hosts)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        if ".hcsgraph" in Path(dirpath).relative_to(root).parts:
            continue
        for name in files:
            if name == "run.json":
                continue
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = hashlib.md5(path.read_bytes()).hexdigest()
    return out


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m hcsgraph.cli ARGS`` with this interpreter; asserts nothing."""
    return subprocess.run([sys.executable, "-m", "hcsgraph.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd)


def check(done: subprocess.CompletedProcess, what: str) -> None:
    """Fail with the command's output when it did not exit 0."""
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@dataclass
class Reference:
    """The tiny plate and the digest of a local run of the cell-count pipeline on it."""

    data: Path
    plate: Path
    digest: dict[str, str]


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """2 wells x 2 sites x 1 channel of 64x64 images, counted by ``hcsgraph run`` on a local cluster.

    The folder is world-readable (containers and SLURM jobs read it) and holds the pipeline file.
    """
    from hcsgraph.plate.synthetic import make_plate

    data = tmp_path_factory.mktemp("cluster-data")
    data.chmod(0o755)
    plate = make_plate(data / "plate", n_wells=2, sites=2, channels=1, size=(64, 64), seed=7).path
    (data / "cell_count.py").write_text(PIPELINE_FILE.read_text())
    out = data / "out-local"
    check(run_cli("run", str(PIPELINE_FILE), str(plate), "-o", str(out), "--workers", "1"), "the local run")
    digest = output_digest(out)
    assert "cell_counts.csv" in digest and any(name.endswith("zarr.json") for name in digest)
    return Reference(data=data, plate=Path(plate), digest=digest)


@pytest.fixture()
def same_as_reference(reference: Reference) -> Callable[[Path], None]:
    """Assert that an output holds the same bytes as the local run's."""

    def same(out: Path) -> None:
        digest = output_digest(out)
        assert digest == reference.digest, sorted(set(digest.items()) ^ set(reference.digest.items()))[:10]

    return same
