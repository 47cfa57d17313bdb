"""The plate page in a real browser: headless Chromium on the page a LocalCluster's scheduler serves.

Skipped where no Chromium is installed (``make test`` installs Debian's ``chromium`` when run as
root). Everything is checked from the page itself: the states in its data source, the text of
the tooltip a mouse move over a well brings up, the selectors a user would use.
"""

from __future__ import annotations

import pytest

from hcsgraph.dashboard import plate_page_link
from hcsgraph.dashboard.browser import Browser, find_chromium
from hcsgraph.dashboard.probe import choose, hover, open_page, options, page_wells, wait_for_states
from hcsgraph.demo import cell_count_pipeline

METRIC = "cell_counts.cell_count (sum)"


@pytest.fixture()
def browser():
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium on this machine: `make test` run as root installs Debian's chromium "
                    "(or set HCSGRAPH_CHROMIUM to a Chromium binary)")
    with Browser(executable, width=1000, height=700) as b:
        yield b


def test_the_plate_page_shows_every_well_its_failure_values_and_a_resumed_run(
        browser, page_client, failing_plate, tmp_path):
    graph = cell_count_pipeline().compile(failing_plate.path, tmp_path / "out", on_error="continue")
    result = page_client.compute(graph).result()
    expected = {"A01": "done", "A02": "done", "A03": "done", "B01": "done", "B02": "failed", "B03": "done"}
    assert dict(zip(result.wells["well"], result.wells["status"].replace("complete", "done"), strict=True)) == expected

    open_page(browser, plate_page_link(page_client))
    wells = wait_for_states(browser, expected)  # the grid also holds the 6-well plate's empty positions: none here
    assert wells["A01"]["planes"] == "1 / 1" and wells["B02"]["planes"] == "0 / 1"
    assert wells["A01"]["worker"].startswith("tcp://127.0.0.1:")
    tooltip = hover(browser, "B02")
    assert "failed" in tooltip and "PlateReadError" in tooltip and failing_plate.bad_file in tooltip
    assert "error" not in hover(browser, "A01").lower()
    browser.screenshot(tmp_path / "plate-page.png")
    assert (tmp_path / "plate-page.png").stat().st_size > 5000

    # colour by a per-well value of the special outputs, with a colour bar
    assert METRIC in options(browser, "metric-select")
    choose(browser, "metric-select", METRIC)
    browser.wait_for("Bokeh.documents[0].get_model_by_name('value-bar').visible")
    counts = result.special_outputs["cell_counts"].groupby("well")["cell_count"].sum()
    wells = page_wells(browser)
    assert {w: float(v["value"]) for w, v in wells.items() if v["value"]} == counts.astype(float).to_dict()
    assert len({wells[w]["fill"] for w in counts.index}) > 1 or counts.nunique() == 1

    # a resumed run: the page follows it, the finished wells are skipped, B02 fails again
    resumed = cell_count_pipeline().compile(failing_plate.path, tmp_path / "out", on_error="continue", resume=True)
    page_client.compute(resumed).result()
    wait_for_states(browser, {**{w: "skipped" for w in expected if w != "B02"}, "B02": "failed"})
    assert "PlateReadError" in hover(browser, "B02")
    # the first run is one pick away in the run selector
    first = graph.result_key.rpartition("-")[2]
    assert first in [value for value, _label in options(browser, "run-select")]
    choose(browser, "run-select", first)
    wait_for_states(browser, expected)
