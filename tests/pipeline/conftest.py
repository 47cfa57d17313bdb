"""Plates shared by the pipeline tests."""

from __future__ import annotations

import hashlib
import os

import pytest

from hcsgraph.plate.synthetic import make_plate


@pytest.fixture(scope="session")
def plate(tmp_path_factory):
    """2 wells × 2 sites × 2 channels of 128×128 uint16, with ground truth."""
    return make_plate(tmp_path_factory.mktemp("plate") / "plate", n_wells=2, sites=2, channels=2,
                      size=(128, 128), seed=7)


@pytest.fixture()
def fresh_plate(tmp_path):
    """A plate of the test's own, free to damage."""
    return make_plate(tmp_path / "plate", n_wells=3, sites=2, channels=1, size=(96, 96), seed=11)


def output_digest(root) -> dict[str, str]:
    """md5 of every image/table file under an output (the manifest and markers hold timings)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        if ".hcsgraph" in dirpath:
            continue
        for name in files:
            if name == "run.json":
                continue
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.md5(fh.read()).hexdigest()
    return out
