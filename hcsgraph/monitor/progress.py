"""Run a compiled pipeline with a progress bar on the terminal.

On a distributed cluster the bar follows every task of the graph (distributed's own progress
bar); on the local schedulers it is dask's ``ProgressBar``. The run is also a
``distributed.span`` named after the pipeline, so the dashboard's task stream and the
"Spans" page group it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distributed import Client

    from hcsgraph.pipeline import PipelineGraph, RunResult


def dashboard_link(client: Client) -> str | None:
    """The dashboard URL of the client's cluster, if it serves one."""
    try:
        return client.dashboard_link
    except Exception:  # noqa: BLE001 - a scheduler without a dashboard
        return None


def run_graph(graph: PipelineGraph, client: Client | None = None, progress: bool = True) -> RunResult:
    """Compute ``graph`` on ``client`` (or the local threaded scheduler) and return its RunResult."""
    if client is None:
        if progress:
            from dask.diagnostics import ProgressBar

            with ProgressBar():
                return graph.compute()
        return graph.compute()
    future = client.compute(graph)
    if progress:
        from distributed import progress as show_progress

        show_progress(future, notebook=False)
        print()
    return future.result()
