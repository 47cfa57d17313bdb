"""``--scheduler``: check the address, make sure a Dask scheduler answers there, connect in bounded time.

``distributed.Client(address, timeout=...)`` bounds the TCP connect but not the handshake that
follows it: a server that accepts the connection and never answers keeps it waiting for
minutes, and a server that speaks another protocol makes it misread the reply (``Unable to
allocate 2.82 EiB``). So before the Client is made, a plain socket connects with the same
deadline, sends the handshake a Client sends and reads the one the scheduler answers with, which
distributed's protocol functions decode here. Then the Client connects in a helper thread, which
is abandoned (as a daemon) if the deadline passes.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import threading
import time
from typing import Any

from hcsgraph.cli_errors import CLIError

EXAMPLE = "tcp://10.0.0.1:8786"
_HANDSHAKE_MAX_BYTES = 1 << 20  # a scheduler's handshake is a few dozen bytes
_PROBED_SCHEMES = ("tcp",)
_WEB_SCHEMES = ("http", "https")


def check_address(address: str) -> str:
    """``address`` when it is a scheduler address distributed can connect to; else a CLIError."""
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import backends

    text = address.strip()

    def bad(reason: str) -> CLIError:
        return CLIError(f"--scheduler {address!r} is not a scheduler address: {reason} (expected e.g. {EXAMPLE})")

    if not text:
        raise bad("it is empty")
    try:
        scheme, location = parse_address(text)
    except ValueError as exc:
        raise bad(str(exc)) from exc
    if scheme in _WEB_SCHEMES:
        raise CLIError(f"--scheduler {address!r} is a web address (the dashboard?); the scheduler's address "
                       f"looks like {EXAMPLE}")
    if scheme not in backends:
        raise bad(f"unknown protocol {scheme + '://'!r}; known: {', '.join(s + '://' for s in sorted(backends))}")
    if scheme in ("tcp", "tls", "ws", "wss"):
        try:
            host, port = parse_host_port(location)
        except ValueError as exc:
            reason = str(exc).replace("address ''", "the address")
            raise bad("the port is not a number" if "invalid literal" in reason else reason) from exc
        if not host:
            raise bad("no host name")
        if not 0 < int(port) < 65536:
            raise bad(f"port {port} is out of range 1..65535")
    return text


def connect(address: str, timeout: float) -> Any:
    """A ``distributed.Client`` on the scheduler at ``address``, within ``timeout`` seconds in all."""
    address = check_address(address)
    deadline = time.monotonic() + timeout
    probe(address, timeout, deadline)
    return _client_within(address, timeout, deadline)


def probe(address: str, timeout: float, deadline: float) -> dict[str, Any]:
    """The handshake the scheduler at ``address`` greets with (``{}`` for protocols not probed)."""
    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme not in _PROBED_SCHEMES:
        return {}
    host, port = parse_host_port(location)
    sock = _connect_socket(address, host, int(port), timeout, deadline)
    try:
        with contextlib.suppress(OSError):  # as a Client does; a peer that hangs up is told apart below
            sock.settimeout(max(_left(deadline), 0.01))
            sock.sendall(_handshake_bytes())
        return _read_greeting(sock, address, timeout, deadline)
    finally:
        with contextlib.suppress(OSError):
            sock.close()


def _handshake_bytes() -> bytes:
    """The handshake a distributed Client sends first, framed as distributed's TCP comm frames it."""
    import pickle

    from distributed.protocol import dumps
    from distributed.protocol.utils import pack_frames

    info = {"compression": None, "python": tuple(sys.version_info)[:3], "pickle-protocol": pickle.HIGHEST_PROTOCOL}
    payload = pack_frames(dumps(info))
    return struct.pack("Q", len(payload)) + payload


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _connect_socket(address: str, host: str, port: int, timeout: float, deadline: float) -> socket.socket:
    """A connected socket; a refused connection is retried until the deadline (a scheduler may be starting)."""
    last: OSError | None = None
    pause = 0.05
    while True:
        left = _left(deadline)
        if left <= 0:
            reason = f": {last}" if last else ""
            raise CLIError(f"cannot reach the scheduler at {address} within {timeout:g} s{reason}")
        try:
            return socket.create_connection((host, port), timeout=left)
        except socket.gaierror as exc:
            raise CLIError(f"cannot reach the scheduler at {address}: unknown host {host!r} ({exc})") from exc
        except (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError) as exc:
            last = exc
            time.sleep(min(pause, _left(deadline)))
            pause = min(pause * 2, 0.5)
        except TimeoutError as exc:
            raise CLIError(f"cannot reach the scheduler at {address} within {timeout:g} s: {str(exc) or 'timed out'}") \
                from exc
        except OSError as exc:
            raise CLIError(f"cannot reach the scheduler at {address}: {exc}") from exc


class _Silent(Exception):
    """The peer sent nothing more before the deadline."""


class _Closed(Exception):
    """The peer closed the connection."""


def _recv_exact(sock: socket.socket, n: int, deadline: float, got: bytearray) -> bytes:
    """``n`` more bytes (``got`` keeps everything received, for the error message)."""
    start = len(got)
    while len(got) - start < n:
        left = _left(deadline)
        if left <= 0:
            raise _Silent
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(65536, n - (len(got) - start)))
        except TimeoutError as exc:
            raise _Silent from exc
        except OSError as exc:  # reset by the peer
            raise _Closed from exc
        if not chunk:
            raise _Closed
        got.extend(chunk)
    return bytes(got[start:start + n])


def _read_greeting(sock: socket.socket, address: str, timeout: float, deadline: float) -> dict[str, Any]:
    from distributed.protocol import loads
    from distributed.protocol.utils import unpack_frames

    got = bytearray()
    try:
        (size,) = struct.unpack("Q", _recv_exact(sock, 8, deadline, got))
        if not 8 <= size <= _HANDSHAKE_MAX_BYTES:
            raise _NotDask
        frames, missing = unpack_frames(_recv_exact(sock, size, deadline, got), partial=True)
        if sum(missing) > _HANDSHAKE_MAX_BYTES:
            raise _NotDask
        frames = list(frames) + [memoryview(_recv_exact(sock, n, deadline, got)) for n in missing]
        handshake = loads(frames, deserialize=False)
    except _Silent:
        if got:
            raise CLIError(_not_dask(address, _more(sock, got))) from None
        raise CLIError(
            f"{address} accepted the connection but did not answer as a Dask scheduler within {timeout:g} s "
            "(is it a Dask scheduler? a busy one may need a longer --timeout)"
        ) from None
    except _Closed:
        if got:
            raise CLIError(_not_dask(address, bytes(got))) from None
        raise CLIError(f"{address} closed the connection without the Dask handshake: it is not a Dask scheduler") \
            from None
    except CLIError:
        raise
    except Exception:  # noqa: BLE001 - _NotDask, or bytes that do not decode as distributed's protocol
        raise CLIError(_not_dask(address, _more(sock, got))) from None
    if not isinstance(handshake, dict) or "compression" not in handshake:
        raise CLIError(_not_dask(address, bytes(got)))
    return handshake


class _NotDask(Exception):
    """The greeting is not a Dask handshake."""


def _more(sock: socket.socket, got: bytearray) -> bytes:
    """What was received, plus whatever else arrives at once (to quote the peer's first line)."""
    with contextlib.suppress(OSError):
        sock.settimeout(0.2)
        while len(got) < 200:
            chunk = sock.recv(200)
            if not chunk:
                break
            got.extend(chunk)
    return bytes(got)


def _not_dask(address: str, data: bytes) -> str:
    """The one line that says what answered at ``address`` instead of a Dask scheduler."""
    first = data.split(b"\n", 1)[0].rstrip(b"\r")[:80]
    text = first.decode("latin-1")
    if text and all(ch.isprintable() for ch in text):
        said = f"it answered {text!r}"
    else:
        said = f"it answered {len(data)} bytes that are not the Dask protocol"
    kind = ""
    if data.startswith(b"HTTP/"):
        kind = "; that is a web server (a dashboard?), the scheduler itself listens on another port, usually 8786"
    elif data[:3] in (b"SSH", b"220", b"+OK"):
        kind = "; that is another kind of server"
    return f"what answers at {address} is not a Dask scheduler: {said}{kind}"


def _client_within(address: str, timeout: float, deadline: float) -> Any:
    """``Client(address)`` made in a helper thread, given up on at the deadline (plus a little)."""
    from distributed import Client
    from distributed.client import ensure_default_client

    outcome: dict[str, Any] = {}

    def make() -> None:
        try:
            # Not the default client until it is connected: one given up on must not delay the exit.
            outcome["client"] = Client(address, timeout=max(_left(deadline), 1.0), set_as_default=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=make, name="hcsgraph-connect", daemon=True)
    thread.start()
    thread.join(_left(deadline) + 1.0)
    if thread.is_alive():
        raise CLIError(f"the scheduler at {address} did not finish the connection within {timeout:g} s "
                       "(a busy scheduler may need a longer --timeout)")
    error = outcome.get("error")
    if error is not None:
        if isinstance(error, OSError | TimeoutError):
            raise CLIError(f"cannot reach the scheduler at {address} within {timeout:g} s: {error}") from error
        raise error
    client = outcome["client"]
    ensure_default_client(client)  # what compile asks for the cluster's GPU workers
    return client
