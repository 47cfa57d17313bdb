"""The scheduler plugin: runs learnt from graphs, states from transitions and events, the page's route."""

from __future__ import annotations

import urllib.request
from types import SimpleNamespace

from hcsgraph import GlobalPipelineConfig
from hcsgraph.dashboard import ROUTE, PlatePagePlugin, plate_page_link
from hcsgraph.demo import cell_count_pipeline
from hcsgraph.plate.synthetic import make_plate

from .conftest import plugin_summary

TOKEN = "0123456789abcdef0123456789abcdef"


def test_two_runs_at_once_get_one_plate_each_named_by_pipeline_and_output(page_client, failing_plate, tmp_path):
    fused = cell_count_pipeline().compile(failing_plate.path, tmp_path / "fused", on_error="continue")
    unfused = cell_count_pipeline(name="per-step").compile(failing_plate.path, tmp_path / "unfused",
                                                           GlobalPipelineConfig(fuse_tasks=False),
                                                           on_error="continue")
    results = [f.result() for f in page_client.compute([fused, unfused])]
    runs = {r["token"]: r for r in plugin_summary(page_client)}
    for graph, result in zip((fused, unfused), results, strict=True):
        run = runs[graph.result_key.rpartition("-")[2]]
        expected = dict(zip(result.wells["well"], result.wells["status"].replace("complete", "done"), strict=True))
        assert run["wells"] == expected and expected["B02"] == "failed"
        assert run["status"] == "done" and run["counts"]["done"] == 5
    assert runs[fused.result_key.rpartition("-")[2]]["label"] == f"cell-count → {fused.output}"
    assert runs[unfused.result_key.rpartition("-")[2]]["label"] == f"per-step → {unfused.output}"

    def wells(dask_scheduler, token):
        run = dask_scheduler.plugins["hcsgraph-plate"].runs[token]
        return {w.well: (w.planes, w.error, sorted(w.values)) for w in run.wells.values()}

    shown = page_client.run_on_scheduler(wells, token=fused.result_key.rpartition("-")[2])
    assert shown["A01"][0] == "1 / 1" and "cell_counts.cell_count (sum)" in shown["A01"][2]
    assert shown["B02"][0] == "0 / 1" and failing_plate.bad_file in shown["B02"][1]
    assert "PlateReadError" in shown["B02"][1]


def test_other_graphs_are_not_followed(page_client):
    before = len(plugin_summary(page_client))
    assert page_client.submit(sum, [1, 2], key="run_not-hcsgraph").result() == 3
    assert len(plugin_summary(page_client)) == before


def test_the_page_is_served_at_its_link(page_client):
    link = plate_page_link(page_client)
    assert link.endswith(ROUTE) and link.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(link, timeout=30) as reply:
        assert reply.status == 200 and "hcsgraph: plate" in reply.read().decode()


def test_a_scheduler_preloading_hcsgraph_dashboard_serves_the_page(tmp_path):
    from distributed import Client, LocalCluster

    plate = make_plate(tmp_path / "plate", wells=["A01"], sites=1, channels=1, size=(32, 32), seed=2)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,  # in-process comms: no port
                      dashboard_address="127.0.0.1:0", scheduler_kwargs={"preload": ["hcsgraph.dashboard"]}
                      ) as cluster, Client(cluster) as client:
        assert isinstance(cluster.scheduler.plugins["hcsgraph-plate"], PlatePagePlugin)
        client.compute(cell_count_pipeline().compile(plate.path, tmp_path / "out")).result()
        assert [r["wells"] for r in plugin_summary(client)] == [{"A01": "done"}]
        port = cluster.scheduler.http_server.port  # the link names the host's address; it listens on 127.0.0.1
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{ROUTE}", timeout=30) as reply:
            assert reply.status == 200


def test_without_the_annotation_the_run_key_and_task_keys_still_draw_the_plate():
    plugin = PlatePagePlugin()
    scheduler = SimpleNamespace(extensions={}, tasks={}, plugins={})
    keys = [(f"load→write-{TOKEN}", "A01", 1), (f"finalize_well-{TOKEN}", "A01"), (f"load→write-{TOKEN}", "B02", 1),
            f"run_cell-count-{TOKEN}", ("other-1", "A01")]
    plugin.update_graph(scheduler, client="c", keys={f"run_cell-count-{TOKEN}"}, tasks=keys, annotations={},
                        priority={}, stimulus_id="s")
    run = plugin.latest()
    assert (run.token, run.name, sorted(run.wells)) == (TOKEN, "cell-count", ["A01", "B02"])
    assert run.grid == (list("AB"), 3)  # the smallest standard plate holding B02: 6 wells
    plugin.transition(keys[0], "waiting", "processing", stimulus_id="s")
    plugin.transition(keys[0], "processing", "memory", stimulus_id="s", worker="w")
    plugin.transition(keys[1], "processing", "memory", stimulus_id="s", worker="w")
    plugin.transition(("other-1", "A01"), "processing", "memory", stimulus_id="s")
    assert run.counts()["done"] == 1 and run.wells["A01"].planes == "2 / 2 tasks"
    plugin.log_event("hcsgraph-well", {"run": TOKEN, "well": "B02", "status": "failed", "planes": 0,
                                       "errors": [{"step": "load", "message": "boom"}], "values": {}})
    assert run.wells["B02"].state == "failed" and run.wells["B02"].error == "load: boom"
