"""The event a well's completion task sends to the scheduler: status, planes, errors, per-well values.

``finalize_well`` calls :func:`report_well` with the well's ``WellStatus``; on a distributed
worker it becomes one ``log_event`` under :data:`TOPIC`, which the plate page's scheduler plugin
receives (``SchedulerPlugin.log_event``). Elsewhere (threaded or synchronous scheduler) it does
nothing. The event is small and msgpack-safe: the first errors, shortened, and one number per
numeric column of each special output (its sum and mean over the well's rows).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from numbers import Real
from typing import Any

logger = logging.getLogger("hcsgraph.dashboard")

TOPIC = "hcsgraph-well"
"""The scheduler event topic of well completions."""

MAX_ERRORS = 5
MAX_MESSAGE = 1000
IDENTIFIERS = frozenset({"well", "group", "site", "channel", "z", "t", "slice_index"})
"""Columns of a special output that place a row on the plate: never a value to colour by."""
AGGREGATES = ("sum", "mean")


def report_well(status: Any) -> None:
    """Send a finished well's status to the scheduler; a no-op outside a distributed worker."""
    if "distributed" not in sys.modules:
        return  # no worker in this process: do not import distributed for nothing
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    try:
        token = run_token(worker.get_current_task())
        if token is not None:
            worker.log_event(TOPIC, well_event(status, token))
    except Exception:  # noqa: BLE001 - the page is a view: it never fails a well
        logger.debug("could not report well %s to the plate page", getattr(status, "well", "?"), exc_info=True)


def run_token(key: Any) -> str | None:
    """The compile token a task key ends with: ``("load-<token>", "B03", ...)`` → ``<token>``."""
    name = key[0] if isinstance(key, tuple) and key else key
    if not isinstance(name, str) or "-" not in name:
        return None
    return name.rpartition("-")[2] or None


def well_event(status: Any, token: str) -> dict[str, Any]:
    """The event for one well: ``{"run", "well", "status", "planes", "seconds", "errors", "values"}``."""
    errors = [
        {"step": str(e.get("step", "")), "group": str(e.get("group", "")),
         "message": _short(str(e.get("message", "")))}
        for e in list(status.errors)[:MAX_ERRORS]
    ]
    return {
        "run": token,
        "well": str(status.well),
        "status": "failed" if status.status == "failed" else "done",
        "planes": int(status.planes),
        "seconds": float(sum(status.seconds.values())),
        "errors": errors,
        "values": well_values(status.specials),
    }


def well_values(specials: dict[str, list[tuple[str, Any]]]) -> dict[str, float]:
    """One number per special output, numeric column and aggregate: ``{"cell_counts.cell_count (sum)": 412.0}``."""
    out: dict[str, float] = {}
    for name, items in specials.items():
        columns: dict[str, list[float]] = {}
        for _group, value in items:
            for record in records(name, value):
                for column, cell in record.items():
                    if column not in IDENTIFIERS and _is_number(cell):
                        columns.setdefault(str(column), []).append(float(cell))
        for column, numbers in columns.items():
            out[metric_name(name, column, "sum")] = float(sum(numbers))
            out[metric_name(name, column, "mean")] = float(sum(numbers) / len(numbers))
    return out


def metric_name(table: str, column: str, aggregate: str) -> str:
    """How the page and the static heat map name a per-well value."""
    return f"{table}.{column} ({aggregate})"


def records(name: str, value: Any) -> list[dict[str, Any]]:
    """The rows a special output value stands for (as in ``result.special_outputs``)."""
    if hasattr(value, "to_dict") and hasattr(value, "columns"):
        return list(value.to_dict(orient="records"))
    if isinstance(value, list | tuple) and all(isinstance(v, dict) for v in value):
        return [dict(v) for v in value]
    if isinstance(value, dict):
        return [dict(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [dict(vars(value))]
    return [{name: value}]


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, Real):
        return False
    return math.isfinite(float(value))


def _short(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"
