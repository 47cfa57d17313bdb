"""The reference system (openhcs 0.8.6 from PyPI) in its own virtualenv, run on the W2 plates.

``--with-reference`` creates ``benchmarks/.venv-reference``, installs ``openhcs==0.8.6`` there with
``torch==2.13.0`` as a constraint (so pip never pulls a CUDA build), and runs
``benchmarks/reference_runner.py`` with that interpreter on each plate. Any failure (install,
import, run) becomes a recorded skip with its message; the rest of the suite goes on.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.plates import cached_plate, plate_bytes, subset

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-reference"
PACKAGE = "openhcs==0.8.6"
CONSTRAINT = "torch==2.13.0"
INSTALL_TIMEOUT_S = 1800
RUN_TIMEOUT_S = 900
ATTEMPTS = 3


def python() -> Path:
    return VENV / "bin" / "python"


def ensure_installed(log=print) -> str | None:
    """Install the reference system if needed; None when it imports, else why it cannot."""
    if not python().exists():
        log(f"creating {VENV}")
        made = subprocess.run([sys.executable, "-m", "venv", str(VENV)], capture_output=True, text=True)
        if made.returncode:
            return f"could not create {VENV}: {made.stderr.strip()[-500:]}"
    if _imports():
        return None
    log(f"installing {PACKAGE} (constraint {CONSTRAINT}) into {VENV}")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write(CONSTRAINT + "\n")
    try:
        done = subprocess.run([str(python()), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                               "-c", handle.name, PACKAGE], capture_output=True, text=True,
                              timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"pip install {PACKAGE} took more than {INSTALL_TIMEOUT_S} s"
    finally:
        Path(handle.name).unlink(missing_ok=True)
    if done.returncode:
        return f"pip install {PACKAGE} failed: {_tail(done.stderr)}"
    return None if _imports() else "installed, but `import openhcs` fails"


def mirror_plate(plate: Path, mirror: Path) -> Path:
    """The plate seen through symlinks, with the pixel size the reference system's reader insists on.

    Its ImageXpress reader refuses an .HTD file without a ``PixelSize`` entry; the images are the
    same files.
    """
    if mirror.exists():
        shutil.rmtree(mirror)
    mirror.mkdir(parents=True)
    for entry in plate.iterdir():
        if entry.suffix.upper() == ".HTD":
            text = entry.read_text()
            (mirror / entry.name).write_text(text.replace('"EndFile"', '"PixelSizeUM", 0.65\r\n"EndFile"'))
        elif entry.is_dir():
            (mirror / entry.name).symlink_to(entry.resolve())
    return mirror


def _imports() -> bool:
    done = subprocess.run([str(python()), "-c", "import openhcs"], capture_output=True, text=True)
    return done.returncode == 0


def _tail(text: str, n: int = 600) -> str:
    lines = [ln for ln in text.strip().splitlines() if "is ignored" not in ln]
    return " ".join(lines)[-n:]


def run(workdir: Path, *, sizes: dict[str, int], sites: int, channels: int, image_size: int, n_workers: int,
        log=print) -> dict[str, Any]:
    """Rows for the reference system, or a status and message saying why there are none."""
    why = ensure_installed(log)
    if why:
        log(f"  reference skipped: {why}")
        return {"status": "skipped", "message": why, "rows": []}
    full = cached_plate(workdir / "plates", max(sizes.values()), sites, channels, image_size)
    mirror = workdir / "reference-plate"
    rows = []
    for name, n_wells in sizes.items():
        plate = subset(full, n_wells)
        request = {"plate": str(mirror), "wells": plate.wells, "output": str(workdir / "reference-runs" / name),
                   "workers": n_workers, "sigma": 2.0, "radius": 2}
        start = time.perf_counter()
        done = None
        for _attempt in range(ATTEMPTS):  # its conversion of the input is flaky under parallel workers
            shutil.rmtree(mirror.with_name(mirror.name + "_openhcs"), ignore_errors=True)  # it writes beside
            mirror_plate(Path(full.root), mirror)  # and inside its input: a fresh copy each time
            try:
                done = subprocess.run([str(python()), str(HERE / "reference_runner.py"), json.dumps(request)],
                                      capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                return {"status": "failed", "message": f"size {name}: no result in {RUN_TIMEOUT_S} s", "rows": rows}
            if done.returncode == 0:
                break
            log(f"  reference size {name} failed: {_tail(done.stderr or done.stdout, 300)}")
        if done.returncode:
            message = f"size {name} ({ATTEMPTS} attempts): {_tail(done.stderr or done.stdout)}"
            return {"status": "failed", "message": message, "rows": rows}
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        wall = answer.get("wall_s", time.perf_counter() - start)
        rows.append({"system": "reference", "size": name, "backend": answer.get("backend", "zarr"),
                     "wells": n_wells, "images": len(plate), "wall_s": round(wall, 3),
                     "images_per_s": round(len(plate) / wall, 2), "mb_per_s": round(plate_bytes(plate) / 1e6 / wall, 1),
                     "s_per_well": round(wall / n_wells, 4), "peak_rss_worker_mb": answer.get("peak_rss_mb"),
                     "peak_rss_main_mb": None, "processes": [], "cells": answer.get("cells")})
    return {"status": "ran", "message": "", "rows": rows}
