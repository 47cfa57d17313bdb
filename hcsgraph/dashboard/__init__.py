"""The plate page: live well states of hcsgraph runs on the scheduler's dashboard, and a static heat map.

- :class:`PlatePagePlugin`: a scheduler plugin that follows every hcsgraph run from the
  scheduler's own events and serves the page at ``/hcsgraph-plate``.
  ``register_plate_page(client)`` registers it and returns the link; ``dask scheduler --preload
  hcsgraph.dashboard`` starts a scheduler with it.
- :func:`report_well`: what a well's completion task sends to the page.
- :func:`run_annotation`: the ``hcsgraph`` annotation a compiled run carries to the scheduler.
- :func:`plot_plate` (:mod:`hcsgraph.dashboard.static`): a PNG heat map of a finished run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hcsgraph.dashboard.annotation import ANNOTATION, run_annotation
from hcsgraph.dashboard.events import TOPIC, report_well

if TYPE_CHECKING:
    from distributed import Scheduler

__all__ = [
    "ANNOTATION",
    "ROUTE",
    "TOPIC",
    "PlatePagePlugin",
    "dask_setup",
    "plate_page_link",
    "plot_plate",
    "register_plate_page",
    "report_well",
    "run_annotation",
]

_LAZY = {
    "PlatePagePlugin": "hcsgraph.dashboard.plugin",
    "ROUTE": "hcsgraph.dashboard.plugin",
    "plate_page_link": "hcsgraph.dashboard.plugin",
    "register_plate_page": "hcsgraph.dashboard.plugin",
    "plot_plate": "hcsgraph.dashboard.static",
}


def __getattr__(name: str) -> Any:
    """The plugin and the heat map load distributed / bokeh / matplotlib only when asked for."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hcsgraph.dashboard' has no attribute {name!r}")


def dask_setup(scheduler: Scheduler) -> None:
    """``dask scheduler --preload hcsgraph.dashboard``: the scheduler starts with the plate page."""
    from hcsgraph.dashboard.plugin import PLUGIN_NAME, PlatePagePlugin

    scheduler.add_plugin(PlatePagePlugin(), name=PLUGIN_NAME, idempotent=True)
