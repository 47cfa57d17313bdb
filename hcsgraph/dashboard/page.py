"""The plate page: a Bokeh document served by the scheduler, drawn from :class:`PlatePagePlugin`'s runs.

One circle per well position of the plate's physical grid, coloured by state (or, once wells
complete, by a per-well value of the run's special outputs, with a colour bar), a hover with the
well, planes done / total, seconds, workers and the failure's message, and a run selector when
several runs are on the scheduler. Each session checks the plugin once a second and sends only
what changed.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from bokeh.layouts import column, row
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    Div,
    FixedTicker,
    HoverTool,
    LinearColorMapper,
    Select,
)
from bokeh.palettes import Viridis256
from bokeh.plotting import figure

from hcsgraph.dashboard.geometry import position
from hcsgraph.dashboard.plugin import PLUGIN_NAME, ROUTE
from hcsgraph.dashboard.state import DONE, FAILED, RUNNING, SKIPPED, STATES, WAITING, PlateRun, WellState

if TYPE_CHECKING:
    from bokeh.document import Document
    from distributed import Scheduler

COLORS = {WAITING: "#d9d9d9", RUNNING: "#f2a93b", DONE: "#2ca25f", FAILED: "#d7301f", SKIPPED: "#9ecae1",
          "empty": "#ffffff"}
NO_VALUE = "#f0f0f0"
STATE = "state"
REFRESH_MS = 1000
FULL_UPDATE = 200
"""Above this many changed wells a session resends the whole table instead of patching it."""
SOURCE_NAME = "plate-wells"
MARK = "_hcsgraph_plate_page"
"""Attribute that marks the Bokeh application serving the page on a scheduler."""
COLUMNS = ("well", "x", "y", "state", "fill", "line", "planes", "seconds", "worker", "error", "value", "details")


def add_route(scheduler: Scheduler) -> bool:
    """Serve the page at :data:`ROUTE` from the scheduler's HTTP server (once); False without one."""
    app = getattr(scheduler, "http_application", None)
    if app is None:
        return False
    if any(getattr(a, MARK, False) for a in app.applications):
        return True
    from distributed.dashboard.core import BokehApplication
    from tornado.ioloop import IOLoop

    prefix = next((a.prefix for a in app.applications if isinstance(getattr(a, "prefix", None), str)), "")
    bokeh_app = BokehApplication({ROUTE: plate_document}, scheduler, prefix=prefix)
    setattr(bokeh_app, MARK, True)
    app.add_application(bokeh_app)
    bokeh_app.initialize(IOLoop.current())
    bokeh_app.start()
    return True


def plate_document(scheduler: Scheduler, extra: dict[str, Any], doc: Document) -> None:
    """Build one session's page; it follows the newest run until the user picks another."""
    PlatePage(scheduler, doc)


class PlatePage:
    """One browser session of the page."""

    def __init__(self, scheduler: Scheduler, doc: Document) -> None:
        self.scheduler = scheduler
        self.doc = doc
        self.token: str | None = None
        self.pinned = False
        self.metric = STATE
        self.seen = -1
        self.rows: dict[str, int] = {}
        self.shown: dict[str, dict[str, Any]] = {}
        self.source = ColumnDataSource({c: [] for c in COLUMNS}, name=SOURCE_NAME)
        self.mapper = LinearColorMapper(palette=Viridis256, low=0, high=1)
        self.run_select = Select(title="Run", options=[], width=420, name="run-select")
        self.metric_select = Select(title="Colour wells by", options=[STATE], value=STATE, width=300,
                                    name="metric-select")
        self.summary = Div(text="No hcsgraph run on this scheduler yet.", name="summary")
        self.run_select.on_change("value", self._pick_run)
        self.metric_select.on_change("value", self._pick_metric)
        self.plot, self.wells, self.bar = self._figure()
        doc.title = "hcsgraph: plate"
        doc.add_root(column(row(self.run_select, self.metric_select), self.summary, self.plot,
                            sizing_mode="stretch_width", name="plate-page"))
        doc.add_periodic_callback(self.refresh, REFRESH_MS)
        self.refresh()

    # -- what the plugin holds -------------------------------------------------------------
    @property
    def plugin(self) -> Any:
        return self.scheduler.plugins.get(PLUGIN_NAME)

    def current(self) -> PlateRun | None:
        """The run shown: the one picked, else the newest."""
        plugin = self.plugin
        if plugin is None:
            return None
        run = plugin.runs.get(self.token) if self.pinned and self.token else None
        return run or plugin.latest()

    # -- updates -------------------------------------------------------------------------
    def refresh(self) -> None:
        """Periodic: follow new runs, send changed wells, keep the selectors current."""
        plugin = self.plugin
        if plugin is None or not plugin.runs:
            return
        options = [(t, f"{r.label} ({r.status})") for t, r in reversed(plugin.runs.items())]
        if options != self.run_select.options:
            self.run_select.options = options
        run = self.current()
        if run is None:
            return
        if run.token != self.token:
            self._show(run)
        elif run.version != self.seen:
            self._update(run)

    def _show(self, run: PlateRun) -> None:
        """Draw a run's plate from scratch."""
        self.token, self.seen = run.token, -1
        if self.run_select.value != run.token:
            self.run_select.value = run.token
        self.metric = STATE if self.metric not in run.metrics else self.metric
        self.metric_select.options = [STATE, *run.metrics]
        self.metric_select.value = self.metric
        self._draw_plate(run)
        self._update(run)

    def _update(self, run: PlateRun) -> None:
        changed = run.changed_since(self.seen) if self.seen >= 0 else []
        full = self.seen < 0 or not self.source.data["well"] or any(w.well not in self.rows for w in changed)
        self.seen = run.version
        metrics = [STATE, *run.metrics]
        if metrics != self.metric_select.options:
            self.metric_select.options = metrics
        moved = self._scale(run)
        if full or len(changed) > FULL_UPDATE or (changed and moved):
            self.source.data = self._table(run)  # a new range recolours every well
        elif changed:
            patches = self._patches(changed)
            if patches:
                self.source.patch(patches)
        self.summary.text = _summary(run)

    def _patches(self, wells: list[WellState]) -> dict[str, list[tuple[int, Any]]]:
        """Only the cells that differ from what the browser has (serialising them is the page's main cost)."""
        patches: dict[str, list[tuple[int, Any]]] = {}
        for well in wells:
            index, row = self.rows[well.well], self._row(well)
            before = self.shown.get(well.well, {})
            for name, value in row.items():
                if before.get(name) != value:
                    patches.setdefault(name, []).append((index, value))
            self.shown[well.well] = row
        return patches

    # -- the user ------------------------------------------------------------------------
    def _pick_run(self, _attr: str, _old: Any, new: Any) -> None:
        if new and new != self.token:
            self.pinned = True
            run = getattr(self.plugin, "runs", {}).get(new)
            if run is not None:
                self._show(run)

    def _pick_metric(self, _attr: str, _old: Any, new: Any) -> None:
        self.metric = new or STATE
        run = self.current()
        if run is not None:
            self._scale(run)
            self.source.data = self._table(run)

    # -- drawing -------------------------------------------------------------------------
    def _figure(self) -> tuple[Any, Any, ColorBar]:
        """The plot, its wells and colour bar; sized and labelled per run by :meth:`_draw_plate`."""
        fig = figure(x_axis_location="above", tools="", toolbar_location=None, name="plate", min_border_left=30,
                     frame_width=300, frame_height=200, x_range=(0.5, 1.5), y_range=(1.5, 0.5))
        fig.grid.visible = False
        fig.outline_line_color = "#888888"
        for axis in (fig.xaxis, fig.yaxis):
            axis.major_tick_line_color = None
            axis.axis_line_color = None
        wells = fig.scatter("x", "y", source=self.source, marker="circle", size=20,
                            fill_color="fill", line_color="line", line_width=1.2, name="wells")
        fig.add_tools(HoverTool(renderers=[wells], tooltips=TOOLTIP, name="well-hover"))
        bar = ColorBar(color_mapper=self.mapper, title="", name="value-bar", width=12, visible=False)
        fig.add_layout(bar, "right")
        return fig, wells, bar

    def _draw_plate(self, run: PlateRun) -> None:
        """Fit the plot to the run's plate: its rows, columns and well size."""
        letters, n_cols = run.grid
        cell = max(14, min(72, 1100 // max(n_cols, 1)))
        fig = self.plot
        fig.frame_width, fig.frame_height = cell * n_cols, cell * len(letters)
        fig.x_range.update(start=0.5, end=n_cols + 0.5)
        fig.y_range.update(start=len(letters) + 0.5, end=0.5)
        fig.xaxis.ticker = FixedTicker(ticks=list(range(1, n_cols + 1)))
        fig.yaxis.ticker = FixedTicker(ticks=list(range(1, len(letters) + 1)))
        fig.yaxis.major_label_overrides = {i + 1: letter for i, letter in enumerate(letters)}
        for axis in (fig.xaxis, fig.yaxis):
            axis.major_label_text_font_size = f"{max(7, min(12, cell // 3))}pt"
        self.wells.glyph.size = cell * 0.82

    def _scale(self, run: PlateRun) -> bool:
        """Fit the colour bar to the chosen value's range; True when the range moved."""
        values = [w.values[self.metric] for w in run.wells.values() if self.metric in w.values]
        if self.metric == STATE or not values:
            self._bar_visible(False)
            return False
        low, high = min(values), max(values)
        high = high if high > low else low + 1
        moved = (self.mapper.low, self.mapper.high) != (low, high)
        if moved:
            self.mapper.update(low=low, high=high)
        self.bar.title = self.metric
        self._bar_visible(True)
        return moved

    def _bar_visible(self, visible: bool) -> None:
        if self.bar.visible != visible:
            self.bar.visible = visible

    def _table(self, run: PlateRun) -> dict[str, list[Any]]:
        letters, n_cols = run.grid
        data: dict[str, list[Any]] = {c: [] for c in COLUMNS}
        self.rows, self.shown = {}, {}
        for r, letter in enumerate(letters, start=1):
            for c in range(1, n_cols + 1):
                name = f"{letter}{c:02d}"
                well = run.wells.get(name)
                entry = self._row(well) if well is not None else _empty(name)
                entry.update(well=name, x=c, y=r)
                if well is not None:
                    self.rows[name] = len(data["well"])
                    self.shown[name] = entry
                for key in COLUMNS:
                    data[key].append(entry[key])
        return data

    def _row(self, well: WellState) -> dict[str, Any]:
        value = well.values.get(self.metric) if self.metric != STATE else None
        if self.metric == STATE:
            fill = COLORS[well.state]
        elif well.state == FAILED:
            fill = COLORS[FAILED]
        elif value is None:
            fill = NO_VALUE
        else:
            fill = _viridis(value, self.mapper.low, self.mapper.high)
        row_, col_ = position(well.well)
        entry = {
            "well": well.well, "x": col_, "y": row_, "state": well.state, "fill": fill,
            "line": "#7f0000" if well.state == FAILED else "#666666",
            "planes": well.planes, "seconds": f"{well.seconds:.2f}" if well.seconds else "",
            "worker": ", ".join(well.workers), "error": well.error,
            "value": "" if value is None else f"{value:.4g}",
        }
        labels = (("planes", "planes"), ("seconds", "seconds"), ("worker", "worker"), ("value", self.metric))
        entry["details"] = "\n".join(f"{label}: {entry[name]}" for name, label in labels if entry[name])
        return entry


TOOLTIP = """
<div style="max-width: 460px; font-size: 12px">
  <div><b>@well</b> &nbsp; @state</div>
  <div style="white-space: pre-wrap">@details</div>
  <div style="color: #b30000; white-space: pre-wrap">@error</div>
</div>
"""


def _empty(name: str) -> dict[str, Any]:
    row_, col_ = position(name)
    return {"well": name, "x": col_, "y": row_, "state": "empty", "fill": COLORS["empty"], "line": "#cccccc",
            "planes": "", "seconds": "", "worker": "", "error": "", "value": "", "details": "no images"}


def _viridis(value: float, low: float, high: float) -> str:
    span = (high - low) or 1.0
    index = int(round((value - low) / span * (len(Viridis256) - 1)))
    return Viridis256[max(0, min(len(Viridis256) - 1, index))]


def _summary(run: PlateRun) -> str:
    counts = run.counts()
    swatches = " &nbsp; ".join(
        f'<span style="display:inline-block;width:11px;height:11px;border-radius:6px;background:{COLORS[s]};'
        f'border:1px solid #666"></span> {s} <b class="count-{s}">{counts[s]}</b>'
        for s in STATES
    )
    where = f" → {html.escape(run.output)}" if run.output and run.output not in run.label else ""
    return (f'<div style="font-size:13px"><b>{html.escape(run.label)}</b>{where} &nbsp; '
            f'<i>{html.escape(run.status)}</i></div><div style="font-size:13px">{swatches}</div>')
