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
import json
import os
import socket
from dataclasses import dataclass
from typing import Any

from hcsgraph.io import location as loc
from hcsgraph.pipeline.errors import PipelineCompileError


class OutputLockedError(PipelineCompileError):
    """Another run holds the output."""


class StaleRunError(RuntimeError):
    """A task of a run that no longer owns the output tried to write to it."""


def lock_path(output: str) -> str:
    """The lock file of an output: beside it, so that replacing the output never removes it."""
    parent, name = loc.split(loc.absolute(str(output).rstrip("/") or "/"))
    return loc.join(parent, f".{name}.hcsgraph-lock")


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


def read_lock(path: str, options: Any = None) -> dict[str, Any] | None:
    """The lock's content, or None when there is no lock."""
    try:
        data = loc.read_json(path, options)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    return (f"run {holder.get('run_id', '?')} ({holder.get('pipeline', '?')}, pid {holder.get('pid', '?')} "
            f"on {holder.get('host', '?')}, since {holder.get('started', '?')})")


def acquire(output: str, run_id: str, pipeline: str, options: Any = None) -> str:
    """Take the output's lock for ``run_id``; returns the lock path. Raises :class:`OutputLockedError`."""
    path = lock_path(output)
    if not loc.is_url(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    record = {"run_id": run_id, "pipeline": pipeline, "host": socket.gethostname(), "pid": os.getpid(),
              "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "output": output}
    payload = json.dumps(record, indent=2).encode()
    for _ in range(3):
        try:
            loc.write_bytes_exclusive(path, payload, options)
        except FileExistsError:
            holder = read_lock(path, options)
            if holder is None:
                continue  # released meanwhile
            mine = holder.get("host") == socket.gethostname() and holder.get("pid") == os.getpid()
            if holder and _holder_alive(holder) and not mine:
                raise OutputLockedError(
                    f"output {loc.redact(output)} is in use by {_describe(holder)}; wait for it to finish, or "
                    f"remove {loc.redact(path)} if that run is gone"
                ) from None
            loc.write_bytes_atomic(path, payload, options)  # stale, or this process's earlier compile
            return path
        return path
    raise OutputLockedError(f"output {loc.redact(output)}: could not take the lock {loc.redact(path)}")


@dataclass(frozen=True)
class RunGuard:
    """What a task needs to check that its run still owns the output."""

    lock: str
    run_id: str
    options: Any = None

    def check(self) -> None:
        """Raise :class:`StaleRunError` unless the output's lock names this run."""
        holder = read_lock(self.lock, self.options)
        current = None if holder is None else holder.get("run_id")
        if current != self.run_id:
            other = "no run" if holder is None else _describe(holder)
            raise StaleRunError(
                f"run {self.run_id} no longer owns the output (the lock {self.lock} names {other}); "
                "nothing was written"
            )

    def release(self) -> None:
        """Remove the lock if it is still this run's."""
        holder = read_lock(self.lock, self.options)
        if holder is not None and holder.get("run_id") == self.run_id:
            loc.remove(self.lock, self.options, missing_ok=True)


def check_separate(plate_root: str | None, output: str) -> None:
    """Refuse an output that is the input plate, contains it or lies inside it."""
    if not plate_root:
        return
    if loc.is_url(plate_root) != loc.is_url(output):
        return  # one on an object store, one local: they cannot overlap
    if loc.is_url(plate_root):
        plate, out = loc.normalize_url(str(plate_root)).rstrip("/"), loc.normalize_url(str(output)).rstrip("/")
    else:
        plate, out = os.path.realpath(plate_root), os.path.realpath(output)
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
    return loc.is_within(path, folder) and path != folder


__all__ = ["OutputLockedError", "RunGuard", "StaleRunError", "acquire", "check_separate", "lock_path", "read_lock"]
