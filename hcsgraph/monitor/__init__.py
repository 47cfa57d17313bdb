"""Watching a run: a terminal progress bar and the dashboard link."""

from hcsgraph.monitor.progress import dashboard_link, run_graph

__all__ = ["dashboard_link", "run_graph"]
