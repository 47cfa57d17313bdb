"""A real S3 API for tests: ``moto_server`` (``pip install "moto[server]"``) in a subprocess on 127.0.0.1.

Use the fixtures from any test folder by importing them into that folder's ``conftest.py`` (or the
test module)::

    from tests.s3server import s3_bucket, s3_endpoint, s3_server, s3_storage_options  # noqa: F401

``s3_server`` (session scope) starts one server on a free port of 127.0.0.1, waits until it answers,
creates :data:`BUCKET`, and at the end stops the process it started, by its PID. ``s3_endpoint`` is its
URL, ``s3_storage_options`` the fsspec/s3fs options that reach it (``{"client_kwargs":
{"endpoint_url": ...}, "key": "testing", "secret": "testing"}``), ``s3_bucket`` the bucket's name.
Every test should work under a prefix of its own (:func:`unique_prefix`). :func:`upload_folder`
copies a local folder (a plate) into the bucket. :meth:`S3Server.requests` lists the requests the
server has answered (from its access log), to count what an operation costs.

Tests skip with a reason when moto's server is not installed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BUCKET = "hcsgraph-test"
KEY = "testing"
SECRET = "testing"
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LOG_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


@dataclass
class S3Server:
    """A running ``moto_server``: its endpoint, process and access log."""

    endpoint: str
    process: subprocess.Popen
    log_path: Path

    @property
    def storage_options(self) -> dict:
        """fsspec/s3fs options reaching this server, with the test credentials."""
        return {"client_kwargs": {"endpoint_url": self.endpoint}, "key": KEY, "secret": SECRET}

    def requests(self) -> list[tuple[str, str, int]]:
        """``(method, path?query, status)`` of every request answered so far, oldest first."""
        found = []
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        for line in text.splitlines():
            match = _LOG_LINE.search(_ANSI.sub("", line))
            if match:
                found.append((match["method"], match["target"], int(match["status"])))
        return found

    def count(self) -> int:
        """The number of requests answered so far (pair with :meth:`since`)."""
        return len(self.requests())

    def since(self, mark: int, settle_s: float = 0.3) -> list[tuple[str, str, int]]:
        """The requests answered after :meth:`count` returned ``mark`` (waits ``settle_s`` for the log)."""
        time.sleep(settle_s)
        return self.requests()[mark:]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _moto_server_command(port: int) -> list[str]:
    executable = Path(sys.executable).with_name("moto_server")
    if executable.exists():
        return [str(executable), "-H", HOST, "-p", str(port)]
    found = shutil.which("moto_server")
    if found:
        return [found, "-H", HOST, "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]


def start_server(log_dir: Path) -> S3Server:
    """Start ``moto_server`` on a free port of 127.0.0.1 and wait until it answers; create :data:`BUCKET`."""
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        pytest.skip(f'moto[server] is not installed ({exc}); pip install "moto[server]"')
    log_path = Path(log_dir) / f"moto-{uuid.uuid4().hex[:8]}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"}
    last_error: Exception | None = None
    for _attempt in range(3):  # the free port may be taken between probing and binding
        port = _free_port()
        endpoint = f"http://{HOST}:{port}"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(_moto_server_command(port), stdout=log, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)
        server = S3Server(endpoint, process, log_path)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    break
            except (urllib.error.URLError, OSError) as exc:
                last_error = exc
                time.sleep(0.1)
        else:
            stop_server(server)
            continue
        _create_bucket(server)
        return server
    raise RuntimeError(f"moto_server did not start on {HOST}: {last_error}; log: {log_path}")


def _create_bucket(server: S3Server) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(**server.storage_options, skip_instance_cache=True)
    fs.mkdir(BUCKET)


def stop_server(server: S3Server) -> None:
    """Stop the server process (by its PID) and wait for it; leaves nothing running."""
    process = server.process
    if process.poll() is None:
        try:
            os.kill(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def unique_prefix(name: str = "t") -> str:
    """A fresh key prefix in the test bucket: ``s3://hcsgraph-test/<name>-<random>``."""
    return f"s3://{BUCKET}/{name}-{uuid.uuid4().hex[:10]}"


def upload_folder(local: str | os.PathLike, url: str, storage_options: dict) -> list[str]:
    """Copy every file under the local folder ``local`` to ``url`` (same relative paths); return the URLs.

    Hidden files are copied too (a plate's ``.zattrs``); symlinks are followed.
    """
    import s3fs

    fs = s3fs.S3FileSystem(**storage_options)
    root = Path(local)
    uploads = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            uploads[f"{url.rstrip('/')}/{path.relative_to(root).as_posix()}"] = path.read_bytes()
    fs.pipe(uploads)
    return list(uploads)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """One moto S3 server for the session, on 127.0.0.1; stopped at the end."""
    server = start_server(tmp_path_factory.mktemp("moto"))
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def s3_endpoint(s3_server: S3Server) -> str:
    """The server's URL, ``http://127.0.0.1:<port>``."""
    return s3_server.endpoint


@pytest.fixture(scope="session")
def s3_storage_options(s3_server: S3Server) -> dict:
    """``{"client_kwargs": {"endpoint_url": ...}, "key": "testing", "secret": "testing"}``."""
    return s3_server.storage_options


@pytest.fixture(scope="session")
def s3_bucket(s3_server: S3Server) -> str:
    """The name of the bucket the server starts with."""
    return BUCKET


__all__ = [
    "BUCKET",
    "S3Server",
    "s3_bucket",
    "s3_endpoint",
    "s3_server",
    "s3_storage_options",
    "start_server",
    "stop_server",
    "unique_prefix",
    "upload_folder",
]
