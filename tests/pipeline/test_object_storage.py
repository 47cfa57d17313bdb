"""Plates and results in object storage: a real S3 API server on 127.0.0.1, workers with no shared disk."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd
import pytest
import zarr

from hcsgraph import FunctionStep, GlobalPipelineConfig, Pipeline, VFSConfig
from hcsgraph.io import location as loc
from hcsgraph.io.omezarr import zarr_store
from hcsgraph.plate import open_plate
from hcsgraph.plate.synthetic import make_plate
from tests.s3server import SECRET, unique_prefix, upload_folder

COUNT = Pipeline([FunctionStep("gaussian_filter", sigma=2), FunctionStep("threshold_otsu"),
                  FunctionStep("label"), FunctionStep("count_cells")], name="count")


@pytest.fixture(scope="module")
def local_plate(tmp_path_factory):
    return make_plate(tmp_path_factory.mktemp("s3plate") / "plate", n_wells=2, sites=2, channels=1, size=(64, 64),
                      seed=21)


@pytest.fixture(scope="module")
def s3_plate(local_plate, s3_storage_options):
    url = unique_prefix("plate")
    upload_folder(local_plate.path, url, s3_storage_options)
    return url


@pytest.fixture(scope="module")
def reference(local_plate, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "o"
    return COUNT.compile(local_plate.path, out).compute(scheduler="threads")


def arrays_at(store, options=None) -> dict[str, np.ndarray]:
    group = zarr.open_group(zarr_store(store, options, read_only=True), mode="r")
    return {p: np.asarray(a[...]) for p, a in group.members(max_depth=None) if isinstance(a, zarr.Array)}


def read_csv(url: str, options) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(loc.read_bytes(url, options)))


def test_a_run_from_a_bucket_to_a_bucket_equals_a_local_run(s3_plate, s3_storage_options, reference, tmp_path):
    """Workers are separate processes whose working folder is not the client's; nothing goes to local disk."""
    from distributed import Client, LocalCluster

    out = unique_prefix("out")
    plate = open_plate(s3_plate, storage_options=s3_storage_options)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      memory_limit="2GiB", local_directory=tempfile.mkdtemp()) as cluster, Client(cluster) as client:
        client.run(os.chdir, tempfile.mkdtemp())  # no path on the client's disk is theirs
        result = client.compute(COUNT.compile(plate, out)).result()
    assert result.ok, result.failures
    expected = arrays_at(reference.image_store)
    got = arrays_at(loc.join(out, "plate.ome.zarr"), s3_storage_options)
    assert sorted(got) == sorted(expected)
    for path, data in expected.items():
        np.testing.assert_array_equal(got[path], data, err_msg=path)
    local_csv = pd.read_csv(os.path.join(reference.output, "cell_counts.csv"))
    pd.testing.assert_frame_equal(read_csv(loc.join(out, "cell_counts.csv"), s3_storage_options), local_csv)
    manifest = json.loads(loc.read_bytes(loc.join(out, "run.json"), s3_storage_options))
    assert [w["status"] for w in manifest["wells"]] == ["complete", "complete"]
    assert SECRET not in json.dumps(manifest) and SECRET not in repr(plate)
    assert not loc.exists(loc.join(loc.parent(out), f".{loc.name(out)}.hcsgraph-lock"), s3_storage_options)


def test_resume_reads_its_markers_from_the_bucket(s3_plate, s3_storage_options, reference):
    out = unique_prefix("resume")
    plate = open_plate(s3_plate, storage_options=s3_storage_options)
    assert COUNT.compile(plate, out).compute(scheduler="threads").ok
    loc.remove(loc.join(out, ".hcsgraph", "wells", "A02.json"), s3_storage_options)
    resumed = COUNT.compile(plate, out, resume=True).compute(scheduler="threads")
    assert dict(zip(resumed.wells["well"], resumed.wells["status"], strict=True)) == {
        "A01": "skipped", "A02": "complete"}
    local_csv = pd.read_csv(os.path.join(reference.output, "cell_counts.csv"))
    pd.testing.assert_frame_equal(read_csv(loc.join(out, "cell_counts.csv"), s3_storage_options), local_csv)


def test_tiff_output_and_overwrite_in_a_bucket(s3_plate, s3_storage_options, local_plate, tmp_path):
    out = unique_prefix("tiff")
    plate = open_plate(s3_plate, storage_options=s3_storage_options)
    cfg = GlobalPipelineConfig(vfs=VFSConfig(materialization_backend="disk"))
    smooth = Pipeline([FunctionStep("gaussian_filter", sigma=1)], name="smooth")
    assert smooth.compile(plate, out, cfg).compute(scheduler="threads").ok
    local = smooth.compile(local_plate.path, tmp_path / "o", cfg).compute(scheduler="threads")
    name = "A01/A01_s1_w1_z1_t1.tif"
    assert loc.read_bytes(loc.join(out, "images", name), s3_storage_options) == \
        (tmp_path / "o" / "images" / name).read_bytes()
    from hcsgraph.pipeline.errors import OutputExistsError

    with pytest.raises(OutputExistsError):
        smooth.compile(plate, out, cfg)
    again = smooth.compile(plate, out, cfg, overwrite=True).compute(scheduler="threads")
    assert again.ok and local.ok


def test_a_silent_endpoint_fails_in_bounded_time_without_the_secret(tmp_path):
    import socket
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    options = {"client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}, "key": "k", "secret": "s3cr3t-value"}
    try:
        start = time.monotonic()
        with pytest.raises(Exception) as caught:
            Pipeline([FunctionStep("gaussian_filter")], name="p").compile(
                make_plate(tmp_path / "plate", n_wells=1, sites=1, channels=1, size=(16, 16)).path,
                "s3://nowhere/out", storage_options=options)
        assert time.monotonic() - start < 60
    finally:
        server.close()
    assert "s3://nowhere" in str(caught.value) and "s3cr3t-value" not in str(caught.value)


def test_info_and_convert_work_on_urls(s3_plate, s3_storage_options, local_plate, tmp_path):
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_ENDPOINT_URL": s3_storage_options["client_kwargs"]["endpoint_url"], "TMPDIR": str(tmp_path)}
    info = subprocess.run([sys.executable, "-m", "hcsgraph.cli", "info", s3_plate], capture_output=True, text=True,
                          env=env, timeout=120)
    assert info.returncode == 0, info.stderr
    assert "64x64" in info.stdout and "wells" in info.stdout
    out = unique_prefix("converted") + ".ome.zarr"
    converted = subprocess.run([sys.executable, "-m", "hcsgraph.cli", "convert", s3_plate, "-o", out,
                                "--workers", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert converted.returncode == 0, converted.stderr + converted.stdout
    local = subprocess.run([sys.executable, "-m", "hcsgraph.cli", "convert", local_plate.path, "-o",
                            str(tmp_path / "local.ome.zarr"), "--workers", "1"], capture_output=True, text=True,
                           env=env, timeout=300)
    assert local.returncode == 0, local.stderr
    expected = arrays_at(tmp_path / "local.ome.zarr")
    got = arrays_at(out, {"client_kwargs": s3_storage_options["client_kwargs"], "key": "testing",
                          "secret": "testing"})
    assert sorted(got) == sorted(expected)
    for path, data in expected.items():
        np.testing.assert_array_equal(got[path], data)
