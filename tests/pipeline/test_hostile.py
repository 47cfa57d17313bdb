"""Ordinary hostile conditions: outputs over inputs, two runs on one output, replacing results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import zarr

from hcsgraph import FunctionStep, GlobalPipelineConfig, Pipeline, StepMaterializationConfig, VFSConfig
from hcsgraph.pipeline.errors import OutputExistsError, PipelineCompileError
from hcsgraph.pipeline.guard import OutputLockedError, lock_path
from hcsgraph.plate.synthetic import make_plate

SMOOTH = Pipeline([FunctionStep("gaussian_filter", sigma=1)], name="smooth")


def tree_digest(root) -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = fh.read()
    return out


def test_an_output_that_is_the_input_plate_is_refused(fresh_plate, tmp_path):
    converted = SMOOTH.compile(fresh_plate.path, tmp_path / "in.ome.zarr").compute(scheduler="threads")
    before = tree_digest(converted.output)
    with pytest.raises(PipelineCompileError, match="is the input plate"):
        SMOOTH.compile(converted.output, converted.output, overwrite=True)
    assert tree_digest(converted.output) == before
    with pytest.raises(PipelineCompileError, match="is the input plate"):
        SMOOTH.compile(fresh_plate.path, fresh_plate.path, overwrite=True)


def test_an_output_inside_or_around_the_input_is_refused(fresh_plate, tmp_path):
    before = tree_digest(fresh_plate.path)
    with pytest.raises(PipelineCompileError, match="inside the input plate"):
        SMOOTH.compile(fresh_plate.path, os.path.join(fresh_plate.path, "results"))
    with pytest.raises(PipelineCompileError, match="contains the input plate"):
        SMOOTH.compile(fresh_plate.path, os.path.dirname(fresh_plate.path), overwrite=True)
    assert tree_digest(fresh_plate.path) == before
    assert not os.path.exists(os.path.join(fresh_plate.path, "results"))


def test_overwrite_never_removes_what_hcsgraph_did_not_write(fresh_plate, tmp_path):
    out = tmp_path / "o"
    (out / "images").mkdir(parents=True)
    (out / "images" / "precious.tif").write_bytes(b"not ours")
    with pytest.raises(OutputExistsError, match="did not write"):
        SMOOTH.compile(fresh_plate.path, out, overwrite=True)
    assert (out / "images" / "precious.tif").read_bytes() == b"not ours"
    assert not os.path.exists(lock_path(str(out)))


def test_overwrite_keeps_the_earlier_results_when_the_new_compile_fails(fresh_plate, tmp_path):
    out = tmp_path / "o"
    SMOOTH.compile(fresh_plate.path, out).compute(scheduler="threads")
    before = tree_digest(out)
    broken = Pipeline([
        FunctionStep("gaussian_filter", materialize=StepMaterializationConfig("x", backend="disk")),
        FunctionStep("gaussian_filter", materialize=StepMaterializationConfig("x", backend="zarr")),
    ], name="broken")
    with pytest.raises(PipelineCompileError, match="different backends"):
        broken.compile(fresh_plate.path, out, overwrite=True)
    assert tree_digest(out) == before
    assert sorted(os.listdir(out)) == sorted([".hcsgraph", "plate.ome.zarr", "run.json"])


def test_overwrite_replaces_earlier_tables(fresh_plate, tmp_path):
    out = tmp_path / "o"
    counting = Pipeline([FunctionStep("threshold_otsu"), FunctionStep("label"), FunctionStep("count_cells")],
                        name="count")
    counting.compile(fresh_plate.path, out).compute(scheduler="threads")
    assert (out / "cell_counts.csv").exists()
    SMOOTH.compile(fresh_plate.path, out, overwrite=True).compute(scheduler="threads")
    assert not (out / "cell_counts.csv").exists()
    assert not (out / "cell_counts").exists()
    assert json.loads((out / "run.json").read_text())["pipeline"]["name"] == "smooth"


HOLDER = textwrap.dedent("""
    import sys, time
    from hcsgraph import FunctionStep, Pipeline
    plate, out, ready = sys.argv[1:4]
    graph = Pipeline([FunctionStep("gaussian_filter", sigma=1)], name="first").compile(plate, out)
    open(ready, "w").write("compiled")
    time.sleep(120)
""")


def test_two_runs_on_one_output_the_second_fails_at_once(fresh_plate, tmp_path):
    out = tmp_path / "o"
    ready = tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, fresh_plate.path, str(out), str(ready)])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert holder.poll() is None, "the first run died"
            assert time.monotonic() < deadline
            time.sleep(0.2)
        with pytest.raises(OutputLockedError, match=rf"in use by run \w+ \(first, pid {holder.pid}"):
            SMOOTH.compile(fresh_plate.path, out, overwrite=True)
        second = subprocess.run(
            [sys.executable, "-c", "import sys; from hcsgraph import FunctionStep, Pipeline;"
             "Pipeline([FunctionStep('gaussian_filter')], name='second').compile(sys.argv[1], sys.argv[2],"
             " overwrite=True)", fresh_plate.path, str(out)],
            capture_output=True, text=True, timeout=120)
        assert second.returncode != 0 and "in use by run" in second.stderr
    finally:
        holder.kill()
        holder.wait()
    # its process is gone: the lock is stale and taken over
    result = SMOOTH.compile(fresh_plate.path, out, overwrite=True).compute(scheduler="threads")
    assert result.ok
    assert not os.path.exists(lock_path(str(out)))


def test_a_graph_whose_output_was_taken_over_writes_nothing(fresh_plate, tmp_path):
    out = tmp_path / "o"
    stale = SMOOTH.compile(fresh_plate.path, out, GlobalPipelineConfig(on_error="continue"))
    current = Pipeline([FunctionStep("gaussian_filter", sigma=3)], name="smooth").compile(
        fresh_plate.path, out, overwrite=True)
    with pytest.raises(Exception, match="no longer owns the output"):
        stale.compute(scheduler="threads")
    assert not os.path.exists(out / ".hcsgraph" / "wells")
    result = current.compute(scheduler="threads")
    assert result.ok
    plane = zarr.open_array(os.path.join(result.image_store, "A", "1", "0", "0"), mode="r")[0, 0, 0]
    assert np.asarray(plane).any()
    assert json.loads((out / "run.json").read_text())["pipeline"]["steps"][0]["functions"]["*"][0]["kwargs"] == {
        "sigma": "3"}


def test_output_folders_follow_the_umask(fresh_plate, tmp_path):
    old = os.umask(0o022)
    try:
        result = SMOOTH.compile(fresh_plate.path, tmp_path / "o").compute(scheduler="threads")
        disk_config = GlobalPipelineConfig(vfs=VFSConfig(materialization_backend="disk"))
        disk = SMOOTH.compile(fresh_plate.path, tmp_path / "d", disk_config).compute(scheduler="threads")
    finally:
        os.umask(old)
    for folder in (result.output, result.image_store, os.path.join(result.image_store, "A"),
                   disk.image_store, os.path.join(result.output, ".hcsgraph")):
        assert os.stat(folder).st_mode & 0o777 == 0o755, folder
    assert os.stat(os.path.join(result.output, "run.json")).st_mode & 0o777 == 0o644
    tiff = os.path.join(disk.image_store, "A01", os.listdir(os.path.join(disk.image_store, "A01"))[0])
    assert os.stat(tiff).st_mode & 0o777 == 0o644


@pytest.fixture()
def second_plate(tmp_path):
    return make_plate(tmp_path / "plate2", n_wells=1, sites=1, channels=1, size=(32, 32), seed=2)


def test_a_lock_of_another_host_is_respected(second_plate, tmp_path):
    out = tmp_path / "o"
    with open(lock_path(str(out)), "w") as fh:
        json.dump({"run_id": "abc", "pipeline": "theirs", "host": "elsewhere.example", "pid": 1}, fh)
    with pytest.raises(OutputLockedError, match="elsewhere.example"):
        SMOOTH.compile(second_plate.path, out)


def test_a_full_disk_while_writing_tiffs_names_the_file_and_leaves_no_temporary(tmp_path):
    from tests.fulldisk import fill, mounted_tmpfs

    plate = make_plate(tmp_path / "plate", n_wells=2, sites=2, channels=1, size=(96, 96), seed=5)
    config = GlobalPipelineConfig(vfs=VFSConfig(materialization_backend="disk"), on_error="continue")
    with mounted_tmpfs(tmp_path / "disk", size="1m") as disk:
        graph = SMOOTH.compile(plate.path, disk / "o", config)
        fill(disk, leave=30_000)  # room for one 18 KiB plane
        try:
            result = graph.compute(scheduler="sync")
        except OSError as exc:  # run.json itself did not fit: the error names it
            assert "no space left on device" in str(exc) and "run.json" in str(exc)
        else:
            assert not result.ok
            messages = [f["message"] for f in result.failures]
            assert any("no space left on device" in m for m in messages), messages
            assert all(f["files"] for f in result.failures)
            assert any(f["files"][0].endswith(".tif") for f in result.failures)
        leftovers = [os.path.join(d, n) for d, _, names in os.walk(disk) for n in names
                     if "tmp" in n and n != "filler.bin"]
        assert leftovers == []


# -- what already behaved well, kept tested ------------------------------------------------------


def slow_copy(stack):
    """A step slow enough that a worker can be killed while the run goes on."""
    time.sleep(0.4)
    return stack.copy()


def test_a_worker_killed_mid_run_is_replaced_and_the_output_is_whole(tmp_path):
    import signal

    from distributed import Client, LocalCluster

    plate = make_plate(tmp_path / "plate", n_wells=4, sites=2, channels=1, size=(32, 32), seed=9)
    pipeline = Pipeline([FunctionStep(slow_copy, name="slow")], name="slow")
    expected = pipeline.compile(plate.path, tmp_path / "ref").compute(scheduler="threads")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      memory_limit="1GiB") as cluster, Client(cluster) as client:
        future = client.compute(pipeline.compile(plate.path, tmp_path / "o"))
        time.sleep(1.0)
        pids = client.run(os.getpid)
        os.kill(next(iter(pids.values())), signal.SIGKILL)
        result = future.result(timeout=240)
    assert result.ok
    ref, got = zarr.open_group(expected.image_store, mode="r"), zarr.open_group(result.image_store, mode="r")
    for well in ("A/1", "A/2", "A/3", "A/4"):
        for field in ("0", "1"):
            np.testing.assert_array_equal(got[f"{well}/{field}/0"][...], ref[f"{well}/{field}/0"][...])


def test_a_zero_byte_file_that_is_not_the_first_fails_its_well_only(tmp_path):
    plate = make_plate(tmp_path / "plate", n_wells=3, sites=2, channels=1, size=(32, 32), seed=4)
    from hcsgraph.plate import open_plate

    table = open_plate(plate.path).table
    bad = table[table["well"] == "A02"].iloc[1]["path"]
    open(bad, "wb").close()
    result = SMOOTH.compile(plate.path, tmp_path / "o", on_error="continue").compute(scheduler="threads")
    status = dict(zip(result.wells["well"], result.wells["status"], strict=True))
    assert status == {"A01": "complete", "A02": "failed", "A03": "complete"}
    assert [f["files"] for f in result.failures] == [[bad]]


def test_a_full_disk_during_zarr_writes_fails_clearly_and_a_resume_finishes(tmp_path):
    from tests.fulldisk import FILLER, fill, mounted_tmpfs

    plate = make_plate(tmp_path / "plate", n_wells=3, sites=2, channels=1, size=(96, 96), seed=6)
    expected = SMOOTH.compile(plate.path, tmp_path / "ref").compute(scheduler="threads")
    config = GlobalPipelineConfig(on_error="continue")
    with mounted_tmpfs(tmp_path / "disk", size="1m") as disk:
        graph = SMOOTH.compile(plate.path, disk / "o", config)
        fill(disk, leave=20_000)
        try:
            result = graph.compute(scheduler="sync")
            assert not result.ok
            assert any("No space left on device" in f["message"] or "no space left" in f["message"]
                       for f in result.failures)
        except OSError as exc:
            assert exc.errno == 28
        os.remove(disk / FILLER)
        resumed = SMOOTH.compile(plate.path, disk / "o", config, resume=True).compute(scheduler="sync")
        assert resumed.ok
        got, ref = zarr.open_group(resumed.image_store, mode="r"), zarr.open_group(expected.image_store, mode="r")
        for well in ("A/1", "A/2", "A/3"):
            for field in ("0", "1"):
                np.testing.assert_array_equal(got[f"{well}/{field}/0"][...], ref[f"{well}/{field}/0"][...])
