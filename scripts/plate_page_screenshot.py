"""Generate docs/plate-page.png: the plate page of a run in progress, in headless Chromium.

A 96-well synthetic plate (one truncated image, in F04) is counted once; the wells of rows D–H
are then marked unfinished, as if that run had stopped after row C, and the run is resumed
with a step that takes a moment per well. Mid-run the page shows every state: rows A–C skipped,
done, running and waiting wells, and F04 failed, with its hover. Everything listens on
127.0.0.1 and stops at the end.

    .venv/bin/python scripts/plate_page_screenshot.py [--output docs/plate-page.png]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FAILING = "F04"
RESUMED_ROWS = "DEFGH"


def pause(stack: np.ndarray, control: str = "") -> np.ndarray:
    """Wait the number of seconds written in the file ``control`` (0 when it is absent), then pass the stack on."""
    try:
        time.sleep(float(Path(control).read_text() or 0))
    except (OSError, ValueError):
        pass
    return stack


pause.output_dtype = "same"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "plate-page.png")
    parser.add_argument("--seconds", type=float, default=1.0, help="time each resumed well takes")
    args = parser.parse_args()

    from distributed import Client, LocalCluster

    from hcsgraph import FunctionStep, Pipeline
    from hcsgraph.dashboard import register_plate_page
    from hcsgraph.dashboard.browser import Browser, find_chromium
    from hcsgraph.dashboard.probe import hover, open_page, tooltip_shown
    from hcsgraph.demo import cell_count_pipeline
    from hcsgraph.plate import open_plate
    from hcsgraph.plate.synthetic import make_plate

    if find_chromium() is None:
        print("no Chromium found: install Debian's chromium (apt-get install chromium)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="screen1-"))
    try:
        plate = make_plate(work / "plate", n_wells=96, plate_format=96, sites=1, channels=1, size=(64, 64), seed=5)
        bad = open_plate(plate.path).table.query("well == @FAILING")["path"].iloc[0]
        Path(bad).write_bytes(Path(bad).read_bytes()[:200])
        control = work / "pause-seconds"
        control.write_text("0")
        steps = [FunctionStep(pause, control=str(control)), *cell_count_pipeline().steps]
        pipeline = Pipeline(steps, name="cell-count")
        output = work / "plate07-results"
        with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0",
                          processes=True) as cluster, Client(cluster) as client:
            link = register_plate_page(client)
            client.compute(pipeline.compile(plate.path, output, on_error="continue")).result()
            for marker in (output / ".hcsgraph" / "wells").glob("*.json"):
                if marker.stem[0] in RESUMED_ROWS:
                    marker.unlink()  # as if the first run had stopped after row C
            control.write_text(str(args.seconds))
            future = client.compute(pipeline.compile(plate.path, output, on_error="continue", resume=True))
            with Browser(width=1100, height=760) as browser:
                open_page(browser, link)
                _wait_mid_run(browser)
                box = browser.evaluate("""(() => {
                  const r = Bokeh.index.find_one(Bokeh.documents[0].get_model_by_name('plate'))
                    .el.getBoundingClientRect();
                  return [r.right, r.bottom];
                })()""")
                args.output.parent.mkdir(parents=True, exist_ok=True)
                for _ in range(20):  # the page redraws changed wells twice a second: retake until the tooltip stays
                    hover(browser, FAILING)
                    browser.screenshot(args.output, clip=(0, 0, max(box[0], 760) + 12, box[1] + 12))
                    if tooltip_shown(browser, FAILING):
                        break
            future.result()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {os.path.relpath(args.output, Path.cwd())}")
    return 0


def _wait_mid_run(browser: Any, timeout: float = 120.0) -> None:
    """Until the page shows the failed well next to running and waiting ones (or the run ends)."""
    from hcsgraph.dashboard.probe import page_wells

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        wells = page_wells(browser)
        states = [w["state"] for w in wells.values()]
        failing = wells.get(FAILING, {})
        if failing.get("state") == "failed" and "PlateReadError" in failing.get("error", ""):
            if states.count("waiting") >= 8 and "running" in states:
                return
            if "waiting" not in states and "running" not in states:
                return  # the run ended before that moment came: picture it as it ended
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
