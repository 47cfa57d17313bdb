"""How the ``hcsgraph`` command fails: one ``Error:`` line, exit code 2, details in a log file.

While a command works, everything written to the standard error stream (warnings, log records,
the tracebacks that worker processes print, C libraries' messages) goes to a log file instead of
the terminal, unless ``--verbose`` is given. A failure is reported as one line that names the
log; an unexpected exception's traceback is written to the log (or shown with ``--verbose``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import functools
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

_META_KEY = "hcsgraph.cli.session"
F = TypeVar("F", bound=Callable[..., Any])


class CLIError(click.ClickException):
    """An error shown as one clear line, exit code 2; ``log=True`` names the log file in it."""

    exit_code = 2

    def __init__(self, message: str, *, log: bool = False) -> None:
        super().__init__(message)
        self.log = log


class Session:
    """One command's verbosity and log file (created on first use)."""

    def __init__(self, command: str, verbose: bool = False) -> None:
        self.command = command
        self.verbose = verbose
        self.announce = True
        """After a success, name a log that holds messages (else drop it)."""
        self.log_path: str | None = None

    def _open_log(self) -> Any:
        if self.log_path is None:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            fd, self.log_path = tempfile.mkstemp(prefix=f"hcsgraph-{self.command}-{stamp}-", suffix=".log")
            os.close(fd)
        return open(self.log_path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115 - caller closes

    @property
    def log_has_content(self) -> bool:
        """True when something was written to the log."""
        return bool(self.log_path) and os.path.exists(self.log_path) and os.path.getsize(self.log_path) > 0

    def write_traceback(self, exc: BaseException) -> None:
        """The traceback of ``exc``: on the terminal with ``--verbose``, else in the log."""
        text = "".join(traceback.format_exception(exc))
        if self.verbose:
            click.echo(text.rstrip("\n"), err=True)
            return
        with self._open_log() as fh:
            fh.write(text)

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        """Send standard error (file descriptor 2 and ``sys.stderr``) to the log while the block runs."""
        if self.verbose:
            yield
            return
        log = self._open_log()
        saved_fd = None
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        try:
            saved_fd = os.dup(2)
            os.dup2(log.fileno(), 2)
        except OSError:  # no file descriptor 2 (embedded interpreters): sys.stderr alone
            saved_fd = None
        saved_stream = sys.stderr
        sys.stderr = log
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                log.flush()
            sys.stderr = saved_stream
            if saved_fd is not None:
                os.dup2(saved_fd, 2)
                os.close(saved_fd)
            log.close()

    def finish(self) -> None:
        """After a success: drop an empty log, or name a log that holds messages."""
        if self.log_path is None:
            return
        if self.log_has_content and self.announce:
            click.echo(f"Log: {self.log_path}")
        else:
            with contextlib.suppress(OSError):
                os.remove(self.log_path)

    def annotate(self, message: str) -> str:
        """``message`` with the log file named, when the log holds something."""
        if self.log_has_content and not self.verbose:
            return f"{message} (details: {self.log_path})"
        return message


def session(ctx: click.Context | None = None) -> Session:
    """The current command's Session (a quiet one outside a command)."""
    ctx = ctx or click.get_current_context(silent=True)
    if ctx is None:
        return Session("cli")
    found = ctx.meta.get(_META_KEY)
    if found is None:
        found = ctx.meta[_META_KEY] = Session(ctx.info_name or "cli")
    return found


def note_traceback(exc: BaseException) -> None:
    """Keep ``exc``'s traceback in the running command's log (nothing outside a command)."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        session(ctx).write_traceback(exc)


def captured(announce: bool = True) -> Callable[[F], F]:
    """Run a command with its standard error in the log (see :meth:`Session.capture`)."""

    def wrap(func: F) -> F:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            current = session()
            current.announce = announce
            with current.capture():
                return func(*args, **kwargs)

        return run  # type: ignore[return-value]

    return wrap


def _set_verbose(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    current = session(ctx)
    current.command = ctx.info_name or current.command
    current.verbose = current.verbose or value
    return value


verbose_option = click.option(
    "--verbose", "-v", is_flag=True, expose_value=False, is_eager=True, callback=_set_verbose,
    help="Show warnings, worker messages and tracebacks on the terminal instead of a log file.",
)


# Python-API words that reach the command line in library messages, and what the CLI calls them.
_API_WORDS: tuple[tuple[str, str], ...] = (
    (r"\boverwrite=True\b", "--overwrite"),
    (r"\bresume=True\b", "--resume"),
    (r"\bon_error=['\"]?continue['\"]?", "--on-error continue"),
    (r"\bon_error=['\"]?stop['\"]?", "--on-error stop"),
    (r"\bfuse_tasks=False\b", "--no-fuse"),
    (r"\bfuse_tasks=True\b", "--fuse"),
    (r"\bmaterialization_backend=['\"]?(zarr|disk)['\"]?", r"--backend \1"),
    (r"\bome_zarr_version=['\"]?(0\.[45])['\"]?", r"--ome-zarr-version \1"),
    (r"\bome_zarr_version\b", "--ome-zarr-version"),
    (r"\bmaterialization_backend\b", "--backend"),
    (r"\bthreads_per_worker\b", "--threads-per-worker"),
    (r"\bnum_workers\b", "--workers"),
)


def one_line(message: str) -> str:
    """``message`` on one line: its lines joined with "; "."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return "; ".join(lines)


def cli_words(message: str, pipeline_file: str | None = None) -> str:
    """A library message in the command line's words (``overwrite=True`` → ``--overwrite``)."""
    for pattern, replacement in _API_WORDS:
        message = re.sub(pattern, replacement, message)
    if pipeline_file:
        # Step settings are written in the pipeline file: say where.
        message = re.sub(
            r"\b(set) output_dtype=? on the( last)? step",
            lambda m: f"{m.group(1)} output_dtype=... on the{m.group(2) or ''} step in {pipeline_file}",
            message,
            flags=re.IGNORECASE,
        )
    return message


class Group(click.Group):
    """A click group whose commands fail with one ``Error:`` line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; turn any failure into a CLIError that names the log."""
        try:
            result = super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            raise CLIError(one_line(f"{exc.format_message()} (see: {where} -h)")) from exc
        except click.ClickException as exc:
            message = one_line(exc.format_message())
            if getattr(exc, "log", True):
                message = session(ctx).annotate(message)
            if isinstance(exc, CLIError):
                exc.message = message
                raise
            raise CLIError(message) from exc
        except Exception as exc:  # noqa: BLE001 - every failure is one line; the traceback goes to the log
            if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
                raise  # output piped to a reader that stopped (| head): click ends quietly
            current = session(ctx)
            current.write_traceback(exc)
            text = one_line(str(exc))
            if len(text) > 400:  # the whole of it is in the log
                text = text[:400] + " ..."
            message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
            raise CLIError(current.annotate(cli_words(message))) from exc
        session(ctx).finish()
        return result
