"""One run at a time per output: an exclusive lock, and the run id every write checks.

A compile takes the lock before it looks at the output: a file created atomically
(``O_CREAT | O_EXCL``) next to the output, holding the run id, host and pid. A second compile on
the same output fails at once naming the holder, unless the holder's process is gone (a stale
lock, taken over) or is this very process (a recompile: the new run id replaces the old one, so
the earlier graph's tasks stop writing). Every write task checks that the lock still names its
run before it writes, and the run's last task releases the lock.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import socket
from dataclasses import dataclass
from typing import Any

from hcsgraph.pipeline.errors import PipelineCompileError


class OutputLockedError(PipelineCompileError):
    """Another run holds the output."""


class StaleRunError(RuntimeError):
    """A task of a run that no longer owns the output tried to write to it."""


def lock_path(output: str) -> str:
    """The lock file of an output: beside it, so that replacing the output never removes it."""
    output = os.path.abspath(output.rstrip("/") or "/")
    parent, name = os.path.split(output)
    return os.path.join(parent, f".{name}.hcsgraph-lock")


def _holder_alive(holder: dict[str, Any]) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process cannot be checked from here: assume it runs
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, ValueError):
        return False
    return True


def read_lock(path: str) -> dict[str, Any] | None:
    """The lock's content, or None when there is no lock."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _describe(holder: dict[str, Any]) -> str:
    return (f"run {holder.get('run_id', '?')} ({holder.get('pipeline', '?')}, pid {holder.get('pid', '?')} "
            f"on {holder.get('host', '?')}, since {holder.get('started', '?')})")


def acquire(output: str, run_id: str, pipeline: str) -> str:
    """Take the output's lock for ``run_id``; returns the lock path. Raises :class:`OutputLockedError`."""
    path = lock_path(output)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    record = {"run_id": run_id, "pipeline": pipeline, "host": socket.gethostname(), "pid": os.getpid(),
              "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "output": output}
    payload = json.dumps(record, indent=2).encode()
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            holder = read_lock(path)
            if holder is None:
                continue  # released meanwhile
            mine = holder.get("host") == socket.gethostname() and holder.get("pid") == os.getpid()
            if holder and _holder_alive(holder) and not mine:
                raise OutputLockedError(
                    f"output {output} is in use by {_describe(holder)}; wait for it to finish, or remove "
                    f"{path} if that run is gone"
                ) from None
            _replace_lock(path, payload)  # stale, or this process's earlier compile
            return path
        try:
            os.write(fd, payload)
        finally:
            os.close(fd)
        return path
    raise OutputLockedError(f"output {output}: could not take the lock {path}")


def _replace_lock(path: str, payload: bytes) -> None:
    from hcsgraph.io.atomic import write_bytes_atomic

    write_bytes_atomic(path, payload)


@dataclass(frozen=True)
class RunGuard:
    """What a task needs to check that its run still owns the output."""

    lock: str
    run_id: str

    def check(self) -> None:
        """Raise :class:`StaleRunError` unless the output's lock names this run."""
        holder = read_lock(self.lock)
        current = None if holder is None else holder.get("run_id")
        if current != self.run_id:
            other = "no run" if holder is None else _describe(holder)
            raise StaleRunError(
                f"run {self.run_id} no longer owns the output (the lock {self.lock} names {other}); "
                "nothing was written"
            )

    def release(self) -> None:
        """Remove the lock if it is still this run's."""
        holder = read_lock(self.lock)
        if holder is not None and holder.get("run_id") == self.run_id:
            try:
                os.remove(self.lock)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise


def check_separate(plate_root: str | None, output: str) -> None:
    """Refuse an output that is the input plate, contains it or lies inside it."""
    if not plate_root or "://" in str(plate_root):
        return
    plate = os.path.realpath(plate_root)
    out = os.path.realpath(output)
    if out == plate:
        raise PipelineCompileError(f"output {output} is the input plate {plate_root}: choose another output")
    if _inside(out, plate):
        raise PipelineCompileError(
            f"output {output} lies inside the input plate {plate_root}: its images would be read as plate "
            "images next time; choose an output outside the plate"
        )
    if _inside(plate, out):
        raise PipelineCompileError(
            f"output {output} contains the input plate {plate_root}: overwriting it would destroy the input; "
            "choose another output"
        )


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


__all__ = ["OutputLockedError", "RunGuard", "StaleRunError", "acquire", "check_separate", "lock_path", "read_lock"]
