"""Fixtures of the CLI tests: a tiny TIFF plate, the CLI as a subprocess, throwaway TCP servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hcsgraph.plate.synthetic import make_plate


@pytest.fixture(scope="session")
def tiff_plate(tmp_path_factory):
    """Two wells x two sites x two channels of 96x96 uint16 images."""
    return make_plate(tmp_path_factory.mktemp("cli") / "plate", n_wells=2, sites=2, channels=2, size=(96, 96),
                      seed=5)


@pytest.fixture(autouse=True)
def _logs_in_tmp_path(tmp_path, monkeypatch):
    """In-process commands write their log files under the test's tmp_path, not the real /tmp."""
    folder = tmp_path / "in-process-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))


@pytest.fixture()
def cli(tmp_path) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``python -m hcsgraph.cli ARGS`` with its temporary files (logs) under the test's tmp_path."""
    logs = tmp_path / "tmp"
    logs.mkdir()

    def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        env = {**os.environ, "TMPDIR": str(logs)}
        return subprocess.run([sys.executable, "-m", "hcsgraph.cli", *args], capture_output=True, text=True,
                              timeout=timeout, env=env)

    run.logs = logs  # type: ignore[attr-defined]
    return run


def error_line(stderr: str) -> str:
    """The one line of a failure: asserts stderr holds exactly one ``Error:`` line and nothing else."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr[-3000:]
    return lines[0]


class Server:
    """A TCP server on 127.0.0.1 that answers each connection with ``reply(connection_number)``."""

    def __init__(self, reply: Callable[[int, socket.socket], None]) -> None:
        self._reply = reply
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(conn)
            try:
                self._reply(len(self.connections), conn)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in [*self.connections, self._sock]:
            conn.close()


@pytest.fixture()
def tcp_server() -> Iterator[Callable[[Callable[[int, socket.socket], None]], Server]]:
    """Start servers with ``tcp_server(reply)``; all are stopped at the end of the test."""
    servers: list[Server] = []

    def start(reply: Callable[[int, socket.socket], None]) -> Server:
        servers.append(Server(reply))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def pipeline_file(folder: Path, body: str, name: str = "pipeline.py") -> Path:
    """A pipeline file with ``body`` after the usual imports."""
    path = folder / name
    path.write_text("import numpy as np\nfrom hcsgraph import FunctionStep, Pipeline\n\n" + body)
    return path
