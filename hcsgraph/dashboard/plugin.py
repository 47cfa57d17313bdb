"""The scheduler plugin behind the plate page: run state from graph updates, transitions and events.

:class:`PlatePagePlugin` learns each hcsgraph run when its graph reaches the scheduler
(``update_graph``: the ``hcsgraph`` annotation, else the run key ``run_<name>-<token>`` and the
wells in the task keys), follows every task of the run (``transition``) and each well's
completion event (``log_event``), and serves the page at :data:`ROUTE` from the scheduler's own
HTTP server. Register it with ``client.register_plugin(PlatePagePlugin())``
(:func:`register_plate_page` does that and returns the link), or start the scheduler with
``dask scheduler --preload hcsgraph.dashboard``.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from distributed.diagnostics.plugin import SchedulerPlugin

from hcsgraph.dashboard.annotation import ANNOTATION
from hcsgraph.dashboard.events import TOPIC, run_token
from hcsgraph.dashboard.state import PlateRun, WellState

if TYPE_CHECKING:
    from distributed import Client, Scheduler

logger = logging.getLogger("hcsgraph.dashboard")

ROUTE = "/hcsgraph-plate"
"""Where the page is served. One path segment: the page's Bokeh scripts are loaded by relative paths."""
PLUGIN_NAME = "hcsgraph-plate"
_RUN_KEY = re.compile(r"^run_(?P<name>.+)-(?P<token>[0-9a-f]{16,})$")
_TRACKED = frozenset({"processing", "memory", "erred", "forgotten"})


class PlatePagePlugin(SchedulerPlugin):
    """Keeps the state of every hcsgraph run on the scheduler and serves the plate page."""

    name = PLUGIN_NAME
    idempotent = True

    def __init__(self, max_runs: int = 20) -> None:
        self.max_runs = max_runs
        self.runs: OrderedDict[str, PlateRun] = OrderedDict()
        self._keys: dict[Any, tuple[PlateRun, WellState | None]] = {}
        self.scheduler: Scheduler | None = None

    # -- SchedulerPlugin -----------------------------------------------------------------
    async def start(self, scheduler: Scheduler) -> None:
        """Serve the page (once per scheduler) from the scheduler's HTTP server."""
        self.scheduler = scheduler
        try:
            from hcsgraph.dashboard.page import add_route
        except ImportError as exc:  # no bokeh on this scheduler: follow runs, serve no page
            logger.warning("the plate page needs bokeh on the scheduler: %s", exc)
            return
        add_route(scheduler)

    def update_graph(self, scheduler: Scheduler, *, keys: Iterable[Any], tasks: list[Any],
                     annotations: dict[str, dict[Any, Any]], **kwargs: Any) -> None:
        """Start following the runs a new graph holds; another graph costs a look at the keys it asks for."""
        self.scheduler = scheduler
        marks = annotations.get(ANNOTATION) or {}
        runs = {run.token: run for run in self._runs_from(marks, keys)}
        if not runs:
            return
        first: dict[str, Any] = {}
        for key in tasks:
            run = runs.get(run_token(key))  # type: ignore[arg-type]
            if run is None:
                continue
            first.setdefault(run.token, key)
            well = key[1] if isinstance(key, tuple) and len(key) > 1 and isinstance(key[1], str) else None
            mark = marks.get(key)
            state = run.add_task(key, well, mark.get("planes") if isinstance(mark, dict) else None)
            self._keys[key] = (run, state)
        for run in runs.values():
            span = _span_label(scheduler, first.get(run.token))
            if span:
                run.label = span if not run.output or run.output in span else f"{span} → {run.output}"
            self._add(run)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        """Move the task's well along; a key of no followed run costs one lookup."""
        if finish not in _TRACKED:
            return
        entry = self._keys.get(key)
        if entry is None:
            return
        run, well = entry
        run.transition(key, well, finish, kwargs)
        if finish == "forgotten":
            del self._keys[key]

    def log_event(self, topic: str, msg: Any) -> None:
        """A well's completion event (:mod:`hcsgraph.dashboard.events`)."""
        if topic != TOPIC or not isinstance(msg, dict):
            return
        run = self.runs.get(str(msg.get("run")))
        if run is not None:
            run.report(msg)

    # -- runs ------------------------------------------------------------------------------
    def _runs_from(self, marks: dict[Any, Any], wanted: Iterable[Any]) -> list[PlateRun]:
        """Runs from the ``hcsgraph`` annotation, else from the run keys the client asks for."""
        found = []
        for key, mark in marks.items():
            if isinstance(mark, dict) and isinstance(mark.get("run"), dict):
                meta = mark["run"]
                token = run_token(key)
                if token is None:
                    continue
                found.append(PlateRun(
                    token, str(meta.get("name", "")), output=str(meta.get("output", "")),
                    wells=[(str(w), int(p) if p else None) for w, p in meta.get("wells", [])],
                    skipped=[str(w) for w in meta.get("skipped", [])],
                    plate_format=meta.get("plate_format"),
                ))
        if found:
            return found
        for key in wanted:  # no annotation: the run key names the run
            match = _RUN_KEY.match(key) if isinstance(key, str) else None
            if match:
                found.append(PlateRun(match["token"], match["name"]))
        return found

    def _add(self, run: PlateRun) -> None:
        self.runs.pop(run.token, None)
        self.runs[run.token] = run
        while len(self.runs) > self.max_runs:
            old = next((t for t, r in self.runs.items() if r.status != "running"), None)
            if old is None:
                break
            self.runs.pop(old)

    def latest(self) -> PlateRun | None:
        """The run that started last."""
        return next(reversed(self.runs.values()), None)

    def summary(self) -> list[dict[str, Any]]:
        """Every run: token, label, status and wells per state (for tests and scripts)."""
        return [{"token": r.token, "label": r.label, "status": r.status, "counts": r.counts(),
                 "wells": {w.well: w.state for w in r.wells.values()}} for r in self.runs.values()]


def _span_label(scheduler: Scheduler, key: Any) -> str:
    """The span a task belongs to, ``("cell-count", "/results/plate07")`` → ``"cell-count → /results/plate07"``."""
    spans = scheduler.extensions.get("spans")
    ts = scheduler.tasks.get(key) if key is not None else None
    span_id = getattr(getattr(ts, "group", None), "span_id", None)
    span = spans.spans.get(span_id) if spans is not None and span_id else None
    if span is None or tuple(span.name) == ("default",):
        return ""
    names = [str(n) for n in span.name]
    return names[0] if len(names) == 1 else f"{' / '.join(names[:-1])} → {names[-1]}"


def plate_page_link(client: Client) -> str | None:
    """The plate page's URL on the client's scheduler (None when it serves no dashboard)."""
    try:
        link = client.dashboard_link
    except Exception:  # noqa: BLE001 - a scheduler without a dashboard
        return None
    if not link:
        return None
    base = link[: -len("/status")] if link.endswith("/status") else link.rstrip("/")
    return base + ROUTE


def register_plate_page(client: Client) -> str | None:
    """Register :class:`PlatePagePlugin` on the client's scheduler (once) and return the page's link.

    Returns None, with a warning in the log, where the scheduler cannot load it (no hcsgraph
    or bokeh there).
    """
    try:
        client.register_plugin(PlatePagePlugin(), name=PLUGIN_NAME)
        served = client.run_on_scheduler(serves_page)
    except Exception as exc:  # noqa: BLE001 - the page is optional: the run goes on without it
        logger.warning("the plate page is not available on this scheduler: %s", exc)
        return None
    return plate_page_link(client) if served else None


def serves_page(dask_scheduler: Scheduler) -> bool:
    """Whether the scheduler serves the plate page (for ``client.run_on_scheduler``)."""
    from hcsgraph.dashboard.page import MARK

    app = getattr(dask_scheduler, "http_application", None)
    return any(getattr(a, MARK, False) for a in getattr(app, "applications", ()))


__all__ = ["PLUGIN_NAME", "ROUTE", "PlatePagePlugin", "plate_page_link", "register_plate_page"]
