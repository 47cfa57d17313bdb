"""Every configuration writes what it says: chunk strategies, label pyramids, windows, fresh keys, resume."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pandas as pd
import pytest
import zarr

from hcsgraph import FunctionStep, GlobalPipelineConfig, GPUConfig, Pipeline, VFSConfig, ZarrConfig
from hcsgraph.memory import torch as torch_type
from hcsgraph.pipeline.errors import PipelineCompileError
from hcsgraph.pipeline.output_state import ResumeMismatchError
from hcsgraph.plate.synthetic import make_plate

from .conftest import output_digest


@pytest.fixture(scope="module")
def zplate(tmp_path_factory):
    """2 wells × 2 sites × 2 channels × 2 z of 32×32 uint16: every component varies."""
    return make_plate(tmp_path_factory.mktemp("zplate") / "plate", n_wells=2, sites=2, channels=2, z=2,
                      size=(32, 32), seed=3)


def image_arrays(store) -> dict[str, np.ndarray]:
    """Every array of an OME-Zarr plate (path → data)."""
    group = zarr.open_group(str(store), mode="r")
    return {path: np.asarray(node[...]) for path, node in group.members(max_depth=None)
            if isinstance(node, zarr.Array)}


def field_arrays(store) -> dict[str, np.ndarray]:
    return {p: a for p, a in image_arrays(store).items() if p.endswith("/0") and "labels" not in p}


def field_attrs(store, path: str) -> dict:
    attrs = dict(zarr.open_group(os.path.join(str(store), path), mode="r").attrs)
    return attrs.get("ome", attrs)


SMOOTH = Pipeline([FunctionStep("gaussian_filter", sigma=1)], name="smooth")


@pytest.mark.parametrize("strategy", ["field", "well"])
@pytest.mark.parametrize("fuse", [True, False])
def test_every_chunk_strategy_writes_every_plane_threaded(zplate, tmp_path, strategy, fuse):
    reference = SMOOTH.compile(zplate.path, tmp_path / "adaptive",
                               GlobalPipelineConfig(fuse_tasks=fuse)).compute(scheduler="threads")
    cfg = GlobalPipelineConfig(zarr=ZarrConfig(chunk_strategy=strategy), fuse_tasks=fuse)
    result = SMOOTH.compile(zplate.path, tmp_path / strategy, cfg).compute(scheduler="threads")
    assert result.ok and reference.ok
    expected = field_arrays(reference.image_store)
    got = field_arrays(result.image_store)
    assert sorted(got) == sorted(expected) and len(got) == 4  # 2 wells × 2 fields
    for path, data in expected.items():
        assert data.shape == (1, 2, 2, 32, 32)
        planes = data.reshape(-1, 32, 32)
        assert all(plane.any() for plane in planes), f"{path}: a plane left empty"
        np.testing.assert_array_equal(got[path], data, err_msg=f"{strategy}: {path}")


@pytest.mark.parametrize("strategy", ["field", "well"])
def test_every_chunk_strategy_writes_every_plane_on_a_local_cluster(zplate, tmp_path, client, strategy):
    reference = SMOOTH.compile(zplate.path, tmp_path / "adaptive").compute()
    # z-stacks as groups: a FIELD chunk then has one group, a WELL chunk several (channels, sites)
    per_z = Pipeline([FunctionStep("gaussian_filter", sigma=1, variable_components=("z",))], name="per-z")
    per_z_ref = per_z.compile(zplate.path, tmp_path / "adaptive-z").compute()
    cfg = GlobalPipelineConfig(zarr=ZarrConfig(chunk_strategy=strategy))
    result = SMOOTH.compile(zplate.path, tmp_path / strategy, cfg).compute()
    result_z = per_z.compile(zplate.path, tmp_path / f"{strategy}-z", cfg).compute()
    assert result.ok and result_z.ok
    for ref, got in ((reference, result), (per_z_ref, result_z)):
        expected = field_arrays(ref.image_store)
        actual = field_arrays(got.image_store)
        assert sorted(actual) == sorted(expected)
        for path, data in expected.items():
            np.testing.assert_array_equal(actual[path], data, err_msg=f"{strategy}: {path}")


def test_strategies_write_one_chunk_per_owner(zplate, tmp_path):
    """WELL: one chunk file per field array; FIELD: one per z-stack (t, c)."""
    cfg = GlobalPipelineConfig(zarr=ZarrConfig(chunk_strategy="well"))
    result = SMOOTH.compile(zplate.path, tmp_path / "w", cfg).compute(scheduler="threads")
    array = zarr.open_array(os.path.join(result.image_store, "A", "1", "0", "0"), mode="r")
    assert array.chunks == array.shape
    cfg = GlobalPipelineConfig(zarr=ZarrConfig(chunk_strategy="field"))
    result = SMOOTH.compile(zplate.path, tmp_path / "f", cfg).compute(scheduler="threads")
    array = zarr.open_array(os.path.join(result.image_store, "A", "1", "0", "0"), mode="r")
    assert array.chunks[:3] == (1, 1, 2)


def test_label_pyramids_never_invent_labels_and_windows_come_from_the_data(zplate, tmp_path):
    pipeline = Pipeline([FunctionStep("gaussian_filter", sigma=1), FunctionStep("threshold_otsu"),
                         FunctionStep("label")], name="labels")
    cfg = GlobalPipelineConfig(zarr=ZarrConfig(pyramid_levels=2))
    result = pipeline.compile(zplate.path, tmp_path / "o", cfg).compute(scheduler="threads")
    assert result.ok
    arrays = image_arrays(result.image_store)
    top_label = 0
    for path, level0 in arrays.items():
        if not path.endswith("/0"):
            continue
        assert level0.dtype == np.int32
        top_label = max(top_label, int(level0.max()))
        level1 = arrays[path[:-1] + "1"]
        y, x = level1.shape[-2:]
        for yy in range(y):
            for xx in range(x):
                block = level0[..., 2 * yy:2 * yy + 2, 2 * xx:2 * xx + 2].reshape(level0.shape[:3] + (-1,))
                value = level1[..., yy, xx]
                assert (block == value[..., None]).any(axis=-1).all(), f"{path}: invented label at {yy},{xx}"
    assert top_label > 1
    omero = field_attrs(result.image_store, "A/1/0")["omero"]
    ends = [ch["window"]["end"] for ch in omero["channels"]]
    assert max(ends) == top_label and min(ch["window"]["start"] for ch in omero["channels"]) == 0
    assert all(end <= top_label for end in ends)


def test_intensity_windows_span_what_was_written(zplate, tmp_path):
    result = SMOOTH.compile(zplate.path, tmp_path / "o").compute(scheduler="threads")
    data = field_arrays(result.image_store)
    for c in range(2):
        lo = min(int(a[:, c].min()) for a in data.values())
        hi = max(int(a[:, c].max()) for a in data.values())
        window = field_attrs(result.image_store, "A/2/1")["omero"]["channels"][c]["window"]
        assert (window["start"], window["end"]) == (lo, hi)


def test_a_recompiled_graph_never_returns_an_earlier_result(plate, tmp_path, client):
    first = SMOOTH.compile(plate.path, tmp_path / "o")
    persisted = client.persist(first)
    client.compute(persisted).result()
    second = SMOOTH.compile(plate.path, tmp_path / "o", overwrite=True)
    assert second.result_key != first.result_key
    result = second.compute()
    assert result.ok
    assert os.path.exists(tmp_path / "o" / "run.json")
    fresh = SMOOTH.compile(plate.path, tmp_path / "fresh").compute()
    got, expected = field_arrays(result.image_store), field_arrays(fresh.image_store)
    assert sorted(got) == sorted(expected)
    for path, data in expected.items():
        assert data.any()
        np.testing.assert_array_equal(got[path], data)


def test_a_step_used_twice_runs_twice_and_is_not_renamed(plate, tmp_path):
    step = FunctionStep("gaussian_filter", sigma=1)
    twice = Pipeline([step, step], name="twice")
    result = twice.compile(plate.path, tmp_path / "twice").compute(scheduler="threads")
    assert step.name == "gaussian_filter"
    other = Pipeline([step], name="once")  # the same step object in another pipeline
    assert other.step_names == ["gaussian_filter"]
    explicit = Pipeline([FunctionStep("gaussian_filter", sigma=1), FunctionStep("gaussian_filter", sigma=1)],
                        name="explicit")
    expected = explicit.compile(plate.path, tmp_path / "explicit").compute(scheduler="threads")
    assert result.ok
    assert set(result.timings["step"]) >= {"gaussian_filter", "gaussian_filter_2"}
    for path, data in field_arrays(expected.image_store).items():
        np.testing.assert_array_equal(field_arrays(result.image_store)[path], data)


COUNT = Pipeline([FunctionStep("gaussian_filter", sigma=2), FunctionStep("threshold_otsu"),
                  FunctionStep("binary_opening", radius=1), FunctionStep("label"), FunctionStep("count_cells")],
                 name="count")


def test_resume_merges_tables_and_manifest(plate, tmp_path):
    full = COUNT.compile(plate.path, tmp_path / "full").compute(scheduler="threads")
    out = tmp_path / "o"
    COUNT.compile(plate.path, out).compute(scheduler="threads")
    os.remove(out / ".hcsgraph" / "wells" / "A02.json")  # as if the run had stopped before A02 finished
    result = COUNT.compile(plate.path, out, resume=True).compute(scheduler="threads")
    assert result.ok
    assert dict(zip(result.wells["well"], result.wells["status"], strict=True)) == {"A01": "skipped",
                                                                                    "A02": "complete"}
    merged = pd.read_csv(out / "cell_counts.csv")
    expected = pd.read_csv(tmp_path / "full" / "cell_counts.csv")
    pd.testing.assert_frame_equal(merged, expected)
    assert sorted(set(result.special_outputs["cell_counts"]["well"])) == ["A01", "A02"]
    manifest = json.loads((out / "run.json").read_text())
    assert [w["well"] for w in manifest["wells"]] == ["A01", "A02"]
    assert manifest["wells"][0]["planes"] == full.wells["planes"].iloc[0]


def test_resume_refuses_an_output_written_with_other_settings(plate, tmp_path):
    out = tmp_path / "o"
    COUNT.compile(plate.path, out).compute(scheduler="threads")
    other = Pipeline([FunctionStep("gaussian_filter", sigma=3), *COUNT.steps[1:]], name="count")
    with pytest.raises(ResumeMismatchError, match="pipeline"):
        other.compile(plate.path, out, resume=True)
    zstd = GlobalPipelineConfig(zarr=ZarrConfig(compressor="zstd", compression_level=3))
    with pytest.raises(ResumeMismatchError, match="compressor"):
        COUNT.compile(plate.path, out, zstd, resume=True)
    smaller = make_plate(tmp_path / "smaller", n_wells=1, sites=2, channels=2, size=(128, 128), seed=7)
    with pytest.raises(ResumeMismatchError, match="input plate"):
        COUNT.compile(smaller.path, out, resume=True)
    # the same settings resume (nothing to do)
    assert COUNT.compile(plate.path, out, resume=True).compute(scheduler="threads").ok


def test_gpu_placement_is_decided_when_the_graph_runs(plate, tmp_path):
    """Compile first, then start a cluster where one worker offers GPU: GPU-typed tasks land only there."""
    pytest.importorskip("torch")
    from distributed import Client, LocalCluster, Nanny, get_task_stream

    pipeline = Pipeline([FunctionStep("gaussian_filter", sigma=1, memory_type="torch"),
                         FunctionStep("threshold_otsu")], name="placed")
    graph = pipeline.compile(plate.path, tmp_path / "o", GlobalPipelineConfig(fuse_tasks=False))
    assert graph.gpu_keys
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                      resources={"GPU": 1}, memory_limit="2GiB") as cluster:
        options = dict(cluster.new_spec["options"])
        options["resources"] = {}
        cluster.worker_spec["cpu-only"] = {"cls": Nanny, "options": options}
        cluster.sync(cluster._correct_state)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=60)
            info = client.scheduler_info()["workers"]
            gpu_worker = next(a for a, w in info.items() if w.get("resources", {}).get("GPU"))
            with get_task_stream(client) as stream:
                result = client.compute(graph).result()
    assert result.ok
    ran = {str(t["key"]): t["worker"] for t in stream.data}
    gpu_ran = {k: w for k, w in ran.items() if k in {str(g) for g in graph.gpu_keys}}
    assert len(gpu_ran) == len(graph.gpu_keys) >= 4  # the torch step and its conversions, 4 groups
    assert set(gpu_ran.values()) == {gpu_worker}
    assert {name for k in graph.gpu_keys for name in graph.links(k)} == {"to_torch", "gaussian_filter", "to_numpy"}


def test_cpu_fallback_setting_decides_for_cupy_steps(plate, tmp_path):
    pytest.importorskip("torch")
    from hcsgraph.pipeline.compiler import _cuda_available

    if _cuda_available():
        pytest.skip("a CUDA device is present: cupy steps run on it")
    step = FunctionStep("gaussian_filter", sigma=1, memory_type="cupy")
    strict = GlobalPipelineConfig(gpu=GPUConfig(cpu_fallback=False))
    with pytest.raises(PipelineCompileError, match="cupy"):
        Pipeline([step], name="gpu").compile(plate.path, tmp_path / "a", strict)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = Pipeline([step], name="gpu").compile(plate.path, tmp_path / "b").compute(scheduler="threads")
    assert result.ok and any("numpy version" in str(w.message) for w in caught)
    # a step's own setting beats the config
    lenient = FunctionStep("gaussian_filter", sigma=1, memory_type="cupy", allow_cpu_fallback=True)
    assert Pipeline([lenient], name="gpu").compile(plate.path, tmp_path / "c", strict).compute(
        scheduler="threads").ok


def test_torch_output_dtype_is_probed(plate, tmp_path):
    pytest.importorskip("torch")

    @torch_type
    def to_float(stack):
        return stack.float() / 2

    result = Pipeline([FunctionStep(to_float)], name="float").compile(plate.path, tmp_path / "o").compute(
        scheduler="threads")
    assert result.ok
    data = field_arrays(result.image_store)
    assert {a.dtype for a in data.values()} == {np.dtype("float32")}
    source = field_arrays(SMOOTH.compile(plate.path, tmp_path / "s").compute(scheduler="threads").image_store)
    assert sorted(data) == sorted(source)


def test_dict_step_that_changes_one_channel_dtype_is_promoted(plate, tmp_path):
    step = FunctionStep({1: ["gaussian_filter", "threshold_otsu", "label"]}, group_by="channel", name="seg")
    result = Pipeline([step], name="seg").compile(plate.path, tmp_path / "o").compute(scheduler="threads")
    assert result.ok
    assert result.notes and "int32" in result.notes[0]
    assert json.loads((tmp_path / "o" / "run.json").read_text())["notes"] == result.notes
    data = field_arrays(result.image_store)
    from tifffile import imread

    index = plate.index if hasattr(plate, "index") else None
    for array in data.values():
        assert array.dtype == np.int32
        assert array[0, 0].max() < 1000  # labels
    # channel 2 passed through unchanged
    from hcsgraph.plate import open_plate

    table = (index or open_plate(plate.path)).table
    row = table[(table["well"] == "A01") & (table["site"] == 1) & (table["channel"] == 2)].iloc[0]
    np.testing.assert_array_equal(data["A/1/0/0"][0, 1, 0], imread(row["path"]).astype(np.int32))


WRITE_OPTIONS = {
    "zarr-0.4-well-pyramid": GlobalPipelineConfig(zarr=ZarrConfig(ome_zarr_version="0.4", chunk_strategy="well",
                                                                  pyramid_levels=2)),
    "zarr-0.5-field-zstd": GlobalPipelineConfig(zarr=ZarrConfig(chunk_strategy="field", compressor="zstd",
                                                                compression_level=3)),
    "tiff": GlobalPipelineConfig(vfs=VFSConfig(materialization_backend="disk")),
}
LABELLED = Pipeline([FunctionStep("gaussian_filter", sigma=1), FunctionStep("threshold_otsu"),
                     FunctionStep("label", output="labels:nuclei"), FunctionStep("count_cells")], name="labelled")


@pytest.mark.parametrize("option", sorted(WRITE_OPTIONS))
def test_every_write_option_writes_the_same_bytes_threaded_on_a_cluster_and_resumed(zplate, tmp_path, client,
                                                                                     option):
    """Images, label images, tables: byte for byte the same on the threaded scheduler, on a LocalCluster,
    and when a cluster run resumes a run that lost a well."""
    cfg = WRITE_OPTIONS[option]
    threaded = LABELLED.compile(zplate.path, tmp_path / "threaded", cfg).compute(scheduler="threads")
    on_cluster = LABELLED.compile(zplate.path, tmp_path / "cluster", cfg).compute()
    assert threaded.ok and on_cluster.ok
    expected = output_digest(tmp_path / "threaded")
    assert len([p for p in expected if "labels" in p]) > 0 and "cell_counts.csv" in expected
    assert output_digest(tmp_path / "cluster") == expected
    os.remove(tmp_path / "cluster" / ".hcsgraph" / "wells" / "A02.json")
    resumed = LABELLED.compile(zplate.path, tmp_path / "cluster", cfg, resume=True).compute()
    assert resumed.ok and list(resumed.wells["status"]) == ["skipped", "complete"]
    assert output_digest(tmp_path / "cluster") == expected
