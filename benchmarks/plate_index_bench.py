"""Time open_plate on a 384-well × 9-site × 4-channel ImageXpress plate (13,824 empty files).

Run: ``python benchmarks/plate_index_bench.py [--repeat N]``; prints JSON with the file count and the
best wall time in seconds. Target: under 2 s.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from hcsgraph.plate import open_plate
from hcsgraph.plate.index import row_letter

ROWS, COLUMNS, SITES, CHANNELS = 16, 24, 9, 4


def build_plate(root: Path) -> int:
    """Write the .HTD and one empty file per image; return the number of image files."""
    lines = ['"HTSInfoFile", Version 1.0', '"TimePoints", 1', '"ZSeries", FALSE', '"ZSteps", 1',
             f'"XWells", {COLUMNS}', f'"YWells", {ROWS}']
    lines += [f'"WellsSelection{r}", ' + ", ".join(["TRUE"] * COLUMNS) for r in range(1, ROWS + 1)]
    lines += ['"Sites", TRUE', '"XSites", 3', '"YSites", 3']
    lines += [f'"SiteSelection{r}", TRUE, TRUE, TRUE' for r in (1, 2, 3)]
    lines += ['"Waves", TRUE', f'"NWavelengths", {CHANNELS}']
    lines += [f'"WaveName{c}", "w{c}"' for c in range(1, CHANNELS + 1)]
    lines.append('"EndFile"')
    (root / "Bench.HTD").write_text("\r\n".join(lines) + "\r\n")
    folder = root / "TimePoint_1"
    folder.mkdir()
    count = 0
    for r in range(1, ROWS + 1):
        for c in range(1, COLUMNS + 1):
            for s in range(1, SITES + 1):
                for w in range(1, CHANNELS + 1):
                    (folder / f"Bench_{row_letter(r)}{c:02d}_s{s}_w{w}.tif").touch()
                    count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = build_plate(root)
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            index = open_plate(root)
            times.append(time.perf_counter() - start)
        assert len(index) == files and index.gaps.empty
        print(json.dumps({"files": files, "seconds": round(min(times), 3),
                          "all_seconds": [round(t, 3) for t in times]}))


if __name__ == "__main__":
    main()
