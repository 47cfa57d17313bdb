"""One chunk planner and compressor for the zarr backend and OME-Zarr plates; chunk owners; write_planes."""

from __future__ import annotations

import itertools
import json
import os
import random
import threading

import numpy as np
import pytest
import zarr

from hcsgraph.config import ConfigError, ZarrChunkStrategy, ZarrConfig
from hcsgraph.io.chunking import chunk_owner, compressors_for, plan_chunks, tile_edge
from hcsgraph.io.omezarr import create_plate, write_plane, write_planes
from hcsgraph.io.zarr import ZarrStorageBackend

EXPECTED = {512: ((512, 512), None), 4096: ((2048, 2048), None), 8192: ((2048, 2048), (8192, 8192))}


def _plate(path, shape, dtype="uint16", config=None, n_levels=1, fields=1):
    return create_plate(path, plate_name="p", wells=["A01"], fields=fields, shape_tczyx=shape, dtype=dtype,
                        channel_names=[f"c{i}" for i in range(shape[1])], zarr_config=config, n_levels=n_levels)


def _files(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, names in os.walk(folder) for f in names
                  if f not in ("zarr.json", ".zarray", ".zattrs", ".zgroup"))


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
@pytest.mark.parametrize("n", [512, 4096, 8192])
def test_backend_and_plate_agree_at_real_sizes(tmp_path, n, dtype):
    ZarrStorageBackend().save(np.zeros((n, n), dtype), tmp_path / "backend")
    _plate(tmp_path / "plate.zarr", (1, 1, 1, n, n), dtype)
    backend = zarr.open_array(tmp_path / "backend", mode="r")
    plate = zarr.open_array(tmp_path / "plate.zarr/A/1/0/0", mode="r")
    chunks, shards = EXPECTED[n]
    assert backend.chunks == chunks and plate.chunks == (1, 1, 1, *chunks)
    assert backend.shards == shards
    assert plate.shards == (None if shards is None else (1, 1, 1, *shards))
    assert plan_chunks((n, n), dtype, ZarrConfig()) == (chunks, shards)
    assert [c.to_dict() for c in backend.compressors] == [c.to_dict() for c in plate.compressors]
    (blosc,) = plate.compressors
    assert blosc.to_dict()["configuration"]["shuffle"] == "shuffle"


@pytest.mark.parametrize("version", ["0.5", "0.4"])
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
@pytest.mark.parametrize("n", [32, 256, 512])
def test_backend_and_plate_write_the_same_chunk_files(tmp_path, version, dtype, n):
    """The 512² / 4096² / 8192² geometry scaled down 16× per edge (and max_chunk_bytes 256×)."""
    config = ZarrConfig(max_chunk_bytes=2**16, ome_zarr_version=version)
    image = np.random.default_rng(n).integers(0, 60000, (n, n)).astype(dtype)
    ZarrStorageBackend().save(image, tmp_path / "backend", zarr_config=config)
    _plate(tmp_path / "plate.zarr", (1, 1, 1, n, n), dtype, config)
    write_plane(tmp_path / "plate.zarr", "A01", 0, 0, 0, 0, image)
    expected_chunks = {32: (32, 32), 256: (128, 128), 512: (128, 128)}[n]
    expected_files = {32: 1, 256: 4, 512: 1 if version == "0.5" else 16}[n]
    backend_files = _files(tmp_path / "backend")
    plate_files = _files(tmp_path / "plate.zarr/A/1/0/0")
    assert len(backend_files) == len(plate_files) == expected_files
    backend = zarr.open_array(tmp_path / "backend", mode="r")
    plate = zarr.open_array(tmp_path / "plate.zarr/A/1/0/0", mode="r")
    assert backend.chunks == plate.chunks[-2:] == expected_chunks
    assert (backend.shards is None) == (plate.shards is None) == (n != 512 or version == "0.4")
    np.testing.assert_array_equal(backend[...], image)
    np.testing.assert_array_equal(plate[0, 0, 0], image)
    if version == "0.4":
        backend_meta = json.loads((tmp_path / "backend/.zarray").read_text())
        plate_meta = json.loads((tmp_path / "plate.zarr/A/1/0/0/.zarray").read_text())
        assert backend_meta["compressor"] == plate_meta["compressor"]
        assert backend_meta["compressor"]["shuffle"] == 1


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float64"])
def test_one_blosc_shuffle_for_every_dtype(tmp_path, dtype):
    ZarrStorageBackend().save(np.zeros((4, 8, 8), dtype), tmp_path / "backend")
    _plate(tmp_path / "plate.zarr", (1, 1, 4, 8, 8), dtype)
    for folder in (tmp_path / "backend", tmp_path / "plate.zarr/A/1/0/0"):
        codecs = json.loads((folder / "zarr.json").read_text())["codecs"]
        blosc = next(c for c in codecs if c["name"] == "blosc")
        assert blosc["configuration"]["shuffle"] == "shuffle"
        assert blosc["configuration"]["typesize"] == np.dtype(dtype).itemsize


def test_planner_rules():
    assert [tile_edge(2, 16 * 2**20), tile_edge(4, 16 * 2**20), tile_edge(1, 1)] == [2048, 2048, 1]
    assert tile_edge(1, 1000, ndim=1) == 512
    small = ZarrConfig(max_chunk_bytes=64 * 64 * 2, shard_min_chunks=4)
    assert plan_chunks((2, 3, 4, 200, 100), "uint16", small) == ((1, 1, 1, 64, 64), (1, 1, 1, 256, 128))
    assert plan_chunks((300,), "uint8", ZarrConfig(max_chunk_bytes=100, shard_min_chunks=2)) == ((64,), (320,))
    assert plan_chunks((), "uint8", small) == ((), None)
    field = ZarrConfig(chunk_strategy="field")
    assert plan_chunks((2, 3, 4, 50, 60), "uint16", field) == ((1, 1, 4, 50, 60), None)
    assert plan_chunks((4, 50, 60), "uint16", field) == ((4, 50, 60), None)
    assert plan_chunks((2, 3, 4, 50, 60), "uint16", ZarrConfig(chunk_strategy="well")) == ((2, 3, 4, 50, 60), None)
    assert compressors_for(ZarrConfig(compressor="none", compression_level=0)) is None


def test_chunk_owner_values():
    assert chunk_owner(ZarrChunkStrategy.ADAPTIVE, 1, 2, 3) == (1, 2, 3)
    assert chunk_owner("field", 1, 2, 3) == (1, 2)
    assert chunk_owner("well", 1, 2, 3) == ()
    with pytest.raises(ConfigError, match="chunk_strategy"):
        chunk_owner("plane", 0, 0, 0)


CONFIGS = {
    "adaptive": ZarrConfig(),
    "adaptive-sharded": ZarrConfig(max_chunk_bytes=16 * 16 * 2, shard_min_chunks=4),
    "adaptive-tiled-v2": ZarrConfig(max_chunk_bytes=16 * 16 * 2, ome_zarr_version="0.4"),
    "field": ZarrConfig(chunk_strategy="field"),
    "field-v2": ZarrConfig(chunk_strategy="field", ome_zarr_version="0.4"),
    "well": ZarrConfig(chunk_strategy="well"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_planes_share_a_chunk_file_exactly_when_their_owners_match(tmp_path, name):
    config = CONFIGS[name]
    shape = (2, 2, 2, 40, 40)
    planes = list(np.ndindex(*shape[:3]))
    touched = {}
    for i, (t, c, z) in enumerate(planes):
        path = tmp_path / f"{i}.zarr"
        _plate(path, shape, config=config, n_levels=2)
        write_plane(path, "A01", 0, t, c, z, np.ones(shape[-2:], np.uint16), n_levels=2)
        touched[(t, c, z)] = {f"{level}/{f}" for level in (0, 1) for f in _files(path / "A/1/0" / str(level))}
    for a, b in itertools.combinations(planes, 2):
        same_owner = chunk_owner(config.chunk_strategy, *a) == chunk_owner(config.chunk_strategy, *b)
        assert bool(touched[a] & touched[b]) == same_owner, (a, b)
        if same_owner:
            assert touched[a] == touched[b]


def _data(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 60000, size=shape).astype(np.uint16)


@pytest.mark.parametrize("strategy", ["field", "well"])
def test_parallel_owners_lose_nothing_and_match_adaptive(tmp_path, strategy):
    shape = (2, 2, 3, 37, 50)
    config = ZarrConfig(chunk_strategy=strategy)
    fields = {f: _data(shape, f) for f in range(2)}
    reference = tmp_path / "adaptive.zarr"
    _plate(reference, shape, n_levels=3, fields=2)
    for f, data in fields.items():
        for t, c, z in np.ndindex(*shape[:3]):
            write_plane(reference, "A01", f, t, c, z, data[t, c, z], n_levels=3)

    path = tmp_path / f"{strategy}.zarr"
    _plate(path, shape, config=config, n_levels=3, fields=2)
    owners: dict[tuple, list] = {}
    for f in fields:
        for plane in np.ndindex(*shape[:3]):
            owners.setdefault((f, *chunk_owner(strategy, *plane)), []).append(plane)
    jobs = list(owners.items())
    random.Random(1).shuffle(jobs)
    barrier = threading.Barrier(len(jobs))
    errors = []

    def owner_writes(key, planes):
        f = key[0]
        planes = list(planes)
        random.Random(len(planes)).shuffle(planes)
        try:
            barrier.wait()
            write_planes(path, "A01", f, planes, np.stack([fields[f][p] for p in planes]), n_levels=3)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=owner_writes, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(jobs) == (8 if strategy == "field" else 2)
    for f, data in fields.items():
        for level in range(3):
            stored = zarr.open_array(path / f"A/1/{f}/{level}", mode="r")
            expected = zarr.open_array(reference / f"A/1/{f}/{level}", mode="r")
            assert stored.chunks[:3] == ((1, 1, 3) if strategy == "field" else (2, 2, 3))
            np.testing.assert_array_equal(stored[...], expected[...])
        np.testing.assert_array_equal(zarr.open_array(path / f"A/1/{f}/0", mode="r")[...], data)


@pytest.mark.parametrize(("strategy", "per_level"), [("adaptive", 12), ("field", 4), ("well", 1)])
def test_one_assignment_per_chunk(tmp_path, monkeypatch, strategy, per_level):
    shape = (1, 4, 3, 16, 16)
    path = tmp_path / "p.zarr"
    _plate(path, shape, config=ZarrConfig(chunk_strategy=strategy), n_levels=2)
    calls = []
    original = zarr.AsyncArray.setitem

    async def counting(self, selection, value, *args, **kwargs):
        calls.append(np.shape(value))
        return await original(self, selection, value, *args, **kwargs)

    monkeypatch.setattr(zarr.AsyncArray, "setitem", counting)
    data = _data(shape)
    planes = list(np.ndindex(*shape[:3]))
    write_planes(path, "A01", 0, planes, np.stack([data[p] for p in planes]), n_levels=2)
    assert len(calls) == 2 * per_level
    monkeypatch.undo()
    np.testing.assert_array_equal(zarr.open_array(path / "A/1/0/0", mode="r")[...], data)


def test_an_owner_may_fill_its_chunk_in_parts(tmp_path):
    shape = (1, 1, 4, 9, 11)
    path = tmp_path / "p.zarr"
    _plate(path, shape, config=ZarrConfig(chunk_strategy="field"), n_levels=2)
    data = _data(shape)
    write_planes(path, "A01", 0, [(0, 0, 2), (0, 0, 0)], data[0, 0, [2, 0]], n_levels=2)
    write_planes(path, "A01", 0, [(0, 0, 3), (0, 0, 1)], data[0, 0, [3, 1]], n_levels=2)
    np.testing.assert_array_equal(zarr.open_array(path / "A/1/0/0", mode="r")[...], data)
    assert zarr.open_array(path / "A/1/0/1", mode="r").shape == (1, 1, 4, 5, 6)


def test_write_planes_checks_its_arguments(tmp_path):
    path = tmp_path / "p.zarr"
    _plate(path, (1, 2, 2, 8, 8))
    planes = np.zeros((2, 8, 8), np.uint16)
    with pytest.raises(ValueError, match="well A01, field 0.*given twice"):
        write_planes(path, "A01", 0, [(0, 1, 1), (0, 1, 1)], planes)
    with pytest.raises(IndexError, match="well A01.*outside"):
        write_planes(path, "A01", 0, [(0, 0, 0), (0, 2, 0)], planes)
    with pytest.raises(ValueError, match="well A01.*shape \\(2, 8, 8\\).*\\(3, 8, 8\\)"):
        write_planes(path, "A01", 0, [(0, 0, 0), (0, 1, 0), (0, 1, 1)], planes)
    with pytest.raises(ValueError, match="downsample"):
        write_planes(path, "A01", 0, [(0, 0, 0), (0, 1, 0)], planes, downsample="max")
    assert not zarr.open_array(path / "A/1/0/0", mode="r")[...].any()
