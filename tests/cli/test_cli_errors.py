"""How the `hcsgraph` command fails: one `Error:` line, exit code 2, tracebacks in a log file."""

from __future__ import annotations

import pickle
import re
import socket
import struct
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hcsgraph.cli import main

from .conftest import error_line, pipeline_file

# A run that fails in the CLI's own checks, before any cluster starts, has this long to end.
QUICK = 60


def _log_named_in(line: str) -> Path:
    found = re.search(r"\(details: (\S+\.log)\)", line)
    assert found, line
    return Path(found.group(1))


# -- --scheduler --------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["not-an-address", "tcp://", "tcp://127.0.0.1:99999", "http://127.0.0.1:8787"])
def test_a_malformed_scheduler_address_is_one_line(cli, tiff_plate, tmp_path, address):
    proc = cli("convert", str(tiff_plate.path), "-o", str(tmp_path / "o.ome.zarr"), "--scheduler", address,
               timeout=QUICK)
    assert proc.returncode == 2
    line = error_line(proc.stderr)
    assert repr(address) in line and "tcp://10.0.0.1:8786" in line
    assert not (tmp_path / "o.ome.zarr").exists()


def test_a_server_that_never_answers_is_given_up_on_after_timeout(cli, tiff_plate, tmp_path, tcp_server):
    server = tcp_server(lambda n, conn: None)  # accepts, then says nothing
    timeout = 2
    # The subprocess is killed (and the test fails) if the CLI is still there timeout + 20 s later.
    proc = cli("convert", str(tiff_plate.path), "-o", str(tmp_path / "o.ome.zarr"), "--scheduler", server.address,
               "--timeout", str(timeout), timeout=timeout + 20)
    assert proc.returncode == 2
    line = error_line(proc.stderr)
    assert server.address in line and "did not answer as a Dask scheduler within 2 s" in line
    assert server.connections  # it did connect


def _dask_handshake() -> bytes:
    """The greeting a Dask scheduler sends on each connection, framed as distributed frames it."""
    from distributed.protocol import dumps
    from distributed.protocol.utils import pack_frames

    payload = pack_frames(dumps({"compression": None, "python": tuple(sys.version_info)[:3],
                                 "pickle-protocol": pickle.HIGHEST_PROTOCOL}))
    return struct.pack("Q", len(payload)) + payload


def test_a_scheduler_that_stalls_after_the_handshake_is_given_up_on(cli, tiff_plate, tmp_path, tcp_server):
    # The first connection gets a real Dask handshake, later ones nothing: the Client's own connection
    # hangs in distributed's handshake, which Client(timeout=...) does not bound.
    def reply(n: int, conn: socket.socket) -> None:
        if n == 1:
            conn.sendall(_dask_handshake())

    server = tcp_server(reply)
    proc = cli("run", str(pipeline_file(tmp_path, "pipeline = Pipeline([FunctionStep('gaussian_filter')])\n")),
               str(tiff_plate.path), "-o", str(tmp_path / "o"), "--scheduler", server.address, "--timeout", "2",
               timeout=2 + 20)
    assert proc.returncode == 2
    line = error_line(proc.stderr)
    assert f"the scheduler at {server.address} did not finish the connection within 2 s" in line
    assert len(server.connections) >= 2


def test_an_http_server_is_not_a_dask_scheduler(cli, tiff_plate, tmp_path, tcp_server):
    def reply(n: int, conn: socket.socket) -> None:
        conn.settimeout(5)
        conn.recv(65536)  # whatever the client sends first
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")

    server = tcp_server(reply)
    proc = cli("convert", str(tiff_plate.path), "-o", str(tmp_path / "o.ome.zarr"), "--scheduler", server.address,
               "--timeout", "5", timeout=QUICK)
    assert proc.returncode == 2
    line = error_line(proc.stderr)
    assert f"what answers at {server.address} is not a Dask scheduler" in line
    assert "'HTTP/1.1 200 OK'" in line and "EiB" not in line


def test_a_closed_port_cannot_be_reached(cli, tiff_plate, tmp_path):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = cli("convert", str(tiff_plate.path), "-o", str(tmp_path / "o.ome.zarr"), "--scheduler",
               f"tcp://127.0.0.1:{port}", "--timeout", "2", timeout=QUICK)
    assert proc.returncode == 2
    assert f"cannot reach the scheduler at tcp://127.0.0.1:{port} within 2 s" in error_line(proc.stderr)


# -- failures of the run itself --------------------------------------------------------------------

BOOM = "def boom(stack):\n    raise ValueError('boom')\n\npipeline = Pipeline([FunctionStep(boom)], name='boom')\n"


def test_a_failing_step_is_one_line_and_the_worker_traceback_goes_to_the_log(cli, tiff_plate, tmp_path):
    boom = pipeline_file(tmp_path, BOOM)
    proc = cli("run", str(boom), str(tiff_plate.path), "-o", str(tmp_path / "o"), "--workers", "1")
    assert proc.returncode == 2
    line = error_line(proc.stderr)  # no worker "Compute Failed" or traceback above it
    assert "step 'boom'" in line and "ValueError: boom" in line and "--on-error continue" in line
    log = _log_named_in(line)
    assert log.parent == cli.logs
    assert "Traceback" in log.read_text() and "boom" in log.read_text()


def test_failed_wells_under_continue_print_a_summary_and_exit_2(cli, tiff_plate, tmp_path):
    boom = pipeline_file(tmp_path, BOOM)
    out = tmp_path / "o"
    proc = cli("run", str(boom), str(tiff_plate.path), "-o", str(out), "--workers", "1", "--on-error", "continue")
    assert proc.returncode == 2
    line = error_line(proc.stderr)
    assert f"2 of 2 wells failed (4 groups; see {out / 'run.json'})" in line
    assert "FAILED A01" in proc.stdout and "ValueError: boom" in proc.stdout


def test_help_says_what_the_exit_status_means():
    for command in ("run", "convert", "demo"):
        text = " ".join(CliRunner().invoke(main, [command, "-h"]).output.split())
        assert "Exit status: 0 when every well completed; 2 for any error" in text


def test_verbose_shows_the_traceback_and_quiet_keeps_it_in_a_log(tiff_plate, tmp_path):
    broken = pipeline_file(tmp_path, "pipeline = Pipeline([FunctionStep(no_such_function)])\n")
    args = ["run", str(broken), str(tiff_plate.path), "-o", str(tmp_path / "o")]
    quiet = CliRunner().invoke(main, args)
    assert quiet.exit_code == 2
    line = error_line(quiet.stderr)
    assert "failed to load: NameError" in line
    log = _log_named_in(line)
    assert log.parent == tmp_path / "in-process-tmp" and "Traceback" in log.read_text()
    loud = CliRunner().invoke(main, [*args, "--verbose"])
    assert loud.exit_code == 2
    assert "Traceback" in loud.stderr and "no_such_function" in loud.stderr
    assert loud.stderr.strip().splitlines()[-1].startswith("Error: ")  # the error line comes last
    assert "details:" not in loud.stderr


def test_an_unexpected_exception_is_one_line_with_its_traceback_in_the_log(cli, tmp_path):
    # demo -o naming a file: make_plate cannot create its folder there (a plain Python exception)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    proc = cli("demo", "--wells", "1", "--sites", "1", "--channels", "1", "--size", "64", "--workers", "1",
               "-o", str(not_a_dir))
    assert proc.returncode == 2
    line = error_line(proc.stderr)
    assert re.search(r"Error: \w+Error: ", line), line
    assert "Traceback (most recent call last)" in _log_named_in(line).read_text()


def test_an_unreadable_first_image_is_one_line_in_info(tmp_path):
    from hcsgraph.plate.synthetic import make_plate

    plate = make_plate(tmp_path / "plate", n_wells=1, sites=1, channels=1, size=(32, 32), seed=1)
    first = sorted(p for p in Path(plate.path).rglob("*.tif*"))[0]
    first.write_bytes(b"not a tiff")
    result = CliRunner().invoke(main, ["info", str(plate.path)])
    assert result.exit_code == 2, result.output
    line = error_line(result.stderr)
    assert str(plate.path) in line
    assert result.exception is None or isinstance(result.exception, SystemExit)


# -- errors in the command line's words ------------------------------------------------------------


def test_compile_errors_speak_the_cli_words(cli, tiff_plate, tmp_path):
    mixed = pipeline_file(tmp_path, (
        "def to_u64(stack):\n    return stack.astype(np.uint64)\n\n"
        "def to_i8(stack):\n    return stack.astype(np.int8)\n\n"
        "pipeline = Pipeline([FunctionStep({'1': to_u64, '2': to_i8}, group_by='channel')], name='mixed')\n"
    ))
    proc = cli("run", str(mixed), str(tiff_plate.path), "-o", str(tmp_path / "o"), "--workers", "1")
    assert proc.returncode == 2
    line = error_line(proc.stderr)
    assert f"output_dtype=... on the step in {mixed}" in line
    assert "output_dtype= " not in line


def test_overwrite_and_resume_together_is_one_line(tiff_plate, tmp_path):
    result = CliRunner().invoke(main, ["convert", str(tiff_plate.path), "-o", str(tmp_path / "o.ome.zarr"),
                                       "--overwrite", "--resume"])
    assert result.exit_code == 2
    assert "--overwrite and --resume exclude each other" in error_line(result.stderr)


def test_usage_errors_are_one_line(tiff_plate, tmp_path):
    result = CliRunner().invoke(main, ["convert", str(tiff_plate.path), "-o", str(tmp_path / "o"), "--workers", "0"],
                                prog_name="hcsgraph")
    assert result.exit_code == 2
    line = error_line(result.stderr)
    assert "--workers" in line and "hcsgraph convert -h" in line
