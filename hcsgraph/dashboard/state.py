"""The state of each well of a run, kept on the scheduler and fed by its task transitions.

A well is **waiting** until one of its tasks starts, **running** until all of them are in
memory, then **done**, or **failed** as soon as one of its tasks errs or returns a failure
(``on_error="continue"``). Wells that an earlier run completed are **skipped** (resume). The
well's completion event (:mod:`hcsgraph.dashboard.events`) settles the final state and adds the
failure's message and the per-well values of the special outputs.

Nothing here imports distributed or bokeh: the plugin calls these methods from its hooks, on
the scheduler's event loop, and the page reads them on the same loop.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hcsgraph.dashboard.geometry import plate_grid

WAITING, RUNNING, DONE, FAILED, SKIPPED = "waiting", "running", "done", "failed", "skipped"
STATES = (WAITING, RUNNING, DONE, FAILED, SKIPPED)
FAILURE_TYPE = ".Failure"
"""A task result whose type name ends so is a failed group under ``on_error="continue"``."""


@dataclass
class WellState:
    """One well: its state, progress and what the hover shows."""

    well: str
    state: str = WAITING
    tasks: int = 0
    done: set[Any] = field(default_factory=set)
    planes_total: int | None = None
    planes_done: int = 0
    seconds: float = 0.0
    workers: list[str] = field(default_factory=list)
    error: str = ""
    values: dict[str, float] = field(default_factory=dict)
    reported: bool = False
    version: int = 0

    @property
    def planes(self) -> str:
        """``"12 / 16"``, or tasks done when the planes are unknown."""
        if self.planes_total is None:
            return f"{len(self.done)} / {self.tasks} tasks" if self.tasks else ""
        return f"{self.planes_done} / {self.planes_total}"


class PlateRun:
    """One run on the plate page: its wells, their states, and a version bumped on every change."""

    def __init__(self, token: str, name: str, *, wells: Iterable[tuple[str, int | None]] = (),
                 skipped: Iterable[str] = (), output: str = "", plate_format: int | None = None,
                 label: str = "") -> None:
        self.token = token
        self.name = name
        self.label = label or (f"{name} → {output}" if output else name)
        self.output = output
        self.created = time.time()
        self.finished: float | None = None
        self.status = RUNNING
        self.version = 0
        self.metrics: dict[str, None] = {}
        self.planes: dict[Any, int] = {}
        self.wells: dict[str, WellState] = {}
        for well, planes in wells:
            self.wells[well] = WellState(well, planes_total=planes)
        for well in skipped:
            self.wells[well] = WellState(well, state=SKIPPED)
        self.plate_format = plate_format
        self._grid: tuple[list[str], int] | None = None

    # -- building ------------------------------------------------------------------------
    def add_task(self, key: Any, well: str | None, planes: int | None = None) -> WellState | None:
        """Count one task of the run (``well`` None for run-level tasks); returns its well."""
        if planes:
            self.planes[key] = int(planes)
        if well is None:
            return None
        state = self.wells.get(well)
        if state is None:
            state = self.wells[well] = WellState(well)
            self._grid = None
        state.tasks += 1
        return state

    @property
    def grid(self) -> tuple[list[str], int]:
        """Row letters and column count of the plate (see :func:`plate_grid`)."""
        if self._grid is None:
            self._grid = plate_grid(self.wells, self.plate_format)
        return self._grid

    # -- transitions -----------------------------------------------------------------------
    def transition(self, key: Any, well: WellState | None, finish: str, info: dict[str, Any]) -> None:
        """A task of the run moved to ``finish``; ``info`` is what the scheduler passed with it."""
        if well is None:
            self._run_transition(finish)
            return
        if finish == "processing":
            if well.state == WAITING:
                self._set(well, state=RUNNING)
        elif finish == "memory":
            self._finished_task(key, well, info)
        elif finish == "erred":
            message = str(info.get("exception_text") or "a task this well needs failed")
            self._finished_task(key, well, info, failure=f"{_step(key)}: {message}")
        elif finish == "forgotten" and key not in well.done and self.status == RUNNING:
            self.status = "cancelled"
            self._bump()

    def _finished_task(self, key: Any, well: WellState, info: dict[str, Any], failure: str = "") -> None:
        if key in well.done:
            return  # recomputed after a lost worker: counted once
        well.done.add(key)
        if not failure and str(info.get("typename", "")).endswith(FAILURE_TYPE):
            failure = f"{_step(key)}: failed (its message comes with the well's completion)"
        if not failure:
            well.planes_done += self.planes.get(key, 0)
        if not well.reported:
            well.seconds += _compute_seconds(info.get("startstops"))
        worker = info.get("worker")
        if worker and worker not in well.workers:
            well.workers.append(str(worker))
        if well.reported:
            self._set(well)
        elif failure:
            self._set(well, state=FAILED, error=well.error or failure)
        elif len(well.done) >= well.tasks and well.state != FAILED:
            self._set(well, state=DONE)
        else:
            self._set(well, state=RUNNING if well.state == WAITING else well.state)

    def _run_transition(self, finish: str) -> None:
        if finish == "memory":
            self.status, self.finished = DONE, time.time()
        elif finish == "erred":
            self.status, self.finished = FAILED, time.time()
        else:
            return
        self._bump()

    # -- the well's completion event -------------------------------------------------------
    def report(self, event: dict[str, Any]) -> None:
        """Settle a well from its completion event (:func:`hcsgraph.dashboard.events.well_event`)."""
        well = self.wells.get(str(event.get("well")))
        if well is None:
            return
        errors = event.get("errors") or []
        error = "; ".join(f"{e.get('step', '')}"
                          + (f" ({e['group']})" if e.get("group") else "") + f": {e.get('message', '')}"
                          for e in errors)
        values = {str(k): float(v) for k, v in (event.get("values") or {}).items()}
        for name in values:
            self.metrics.setdefault(name, None)
        failed = event.get("status") == FAILED
        self._set(
            well,
            state=FAILED if failed else DONE,
            error=error if failed else "",
            values=values,
            planes_done=int(event.get("planes", well.planes_done)),
            planes_total=well.planes_total if well.planes_total is not None else int(event.get("planes", 0)),
            seconds=float(event.get("seconds", well.seconds)),
            reported=True,
        )

    # -- reading ---------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Wells per state."""
        out = dict.fromkeys(STATES, 0)
        for well in self.wells.values():
            out[well.state] += 1
        return out

    def changed_since(self, version: int) -> list[WellState]:
        """Wells changed after ``version``."""
        return [w for w in self.wells.values() if w.version > version]

    def _set(self, well: WellState, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(well, name, value)
        self._bump()
        well.version = self.version

    def _bump(self) -> None:
        self.version += 1


def _compute_seconds(startstops: Any) -> float:
    total = 0.0
    for entry in startstops or ():
        try:
            if entry.get("action") == "compute":
                total += float(entry["stop"]) - float(entry["start"])
        except (AttributeError, KeyError, TypeError, ValueError):
            continue
    return total


def _step(key: Any) -> str:
    """The step (or fused steps) a key runs, without the token."""
    from dask.utils import key_split

    return key_split(key)
