"""Zarr backend: real zarr 3 arrays, codecs and chunks read back from the stored metadata."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from hcsgraph.config import ZarrChunkStrategy, ZarrCompressor, ZarrConfig
from hcsgraph.io import FileManager, StorageFileExistsError, StorageRegistry, UnsupportedDataError
from hcsgraph.io.chunking import plan_chunks
from hcsgraph.io.paths import TEMP_PREFIX
from hcsgraph.io.zarr import ZarrStorageBackend


@pytest.fixture()
def store():
    return ZarrStorageBackend()


def test_each_path_is_its_own_array_directory(store, tmp_path):
    image = np.arange(64, dtype=np.uint16).reshape(8, 8)
    store.save(image, tmp_path / "out" / "A01" / "img_1.tif")
    array_dir = tmp_path / "out" / "A01" / "img_1.tif"
    assert array_dir.is_dir()
    assert json.loads((array_dir / "zarr.json").read_text())["node_type"] == "array"
    np.testing.assert_array_equal(zarr.open_array(str(array_dir), mode="r")[...], image)
    assert store.is_file(array_dir) and not store.is_dir(array_dir)
    assert store.is_dir(tmp_path / "out" / "A01")


@pytest.mark.parametrize(
    ("compressor", "level", "expected"),
    [
        (ZarrCompressor.LZ4, 5, BloscCodec(cname="lz4", clevel=5)),
        (ZarrCompressor.ZSTD, 7, ZstdCodec(level=7)),
        (ZarrCompressor.NONE, 0, None),
    ],
)
def test_compressor_and_level_come_from_config(store, tmp_path, compressor, level, expected):
    config = ZarrConfig(compressor=compressor, compression_level=level)
    store.save(np.zeros((4, 16, 16), np.uint16), tmp_path / "a", zarr_config=config)
    codecs = store.open_array(tmp_path / "a").compressors
    if expected is None:
        assert codecs == ()
    else:
        (codec,) = codecs
        assert type(codec) is type(expected)
        if isinstance(expected, BloscCodec):
            assert codec.cname.value == "lz4" and codec.clevel == level
        else:
            assert codec.level == level


def test_adaptive_chunks_one_plane_and_whole_array_for_field(store, tmp_path):
    stack = np.zeros((5, 32, 48), np.uint8)
    store.save(stack, tmp_path / "adaptive")
    assert store.open_array(tmp_path / "adaptive").chunks == (1, 32, 48)
    store.save(stack, tmp_path / "field", zarr_config=ZarrConfig(chunk_strategy=ZarrChunkStrategy.FIELD))
    assert store.open_array(tmp_path / "field").chunks == (5, 32, 48)


def test_adaptive_tiles_and_shards_large_planes(store, tmp_path):
    config = ZarrConfig(max_chunk_bytes=16 * 16 * 2, shard_min_chunks=4)
    image = np.arange(40 * 40, dtype=np.uint16).reshape(40, 40)
    store.save(image, tmp_path / "big", zarr_config=config)
    array = store.open_array(tmp_path / "big")
    assert array.chunks == (16, 16) and array.shards == (48, 48)
    np.testing.assert_array_equal(store.load(tmp_path / "big"), image)
    assert plan_chunks((3, 40, 40), np.uint16, ZarrConfig(max_chunk_bytes=16 * 16 * 2, shard_min_chunks=100)) == ((1, 16, 16), None)


def test_tiles_stacks_and_shuffle_follow_the_shared_planner(store, tmp_path):
    config = ZarrConfig(max_chunk_bytes=3000, shard_min_chunks=4)
    image = np.arange(100 * 90, dtype=np.uint16).reshape(100, 90)
    store.save(image, tmp_path / "tiled", zarr_config=config)
    tiled = store.open_array(tmp_path / "tiled")
    assert tiled.chunks == (32, 32) and tiled.shards == (128, 96)  # power-of-two tiles, one shard per plane
    np.testing.assert_array_equal(store.load(tmp_path / "tiled"), image)
    store.save(np.ones((2, 3, 8, 8), np.uint8), tmp_path / "field", zarr_config=ZarrConfig(chunk_strategy="field"))
    field = store.open_array(tmp_path / "field")
    assert field.chunks == (1, 3, 8, 8)
    (blosc,) = field.compressors
    assert blosc.shuffle.value == "shuffle" and blosc.typesize == 1
    assert store.load(tmp_path / "field").all()


def test_format_2_for_ome_zarr_04(store, tmp_path):
    store.save(np.ones((4, 4), bool), tmp_path / "v2", zarr_config=ZarrConfig(ome_zarr_version="0.4"))
    assert (tmp_path / "v2" / ".zarray").is_file()
    loaded = store.load(tmp_path / "v2")
    assert loaded.dtype == bool and loaded.all()


def test_str_and_bytes_are_marked_uint8_arrays(store, tmp_path):
    store.save("ünïcode,text\n", tmp_path / "t.csv")
    array = store.open_array(tmp_path / "t.csv")
    assert array.dtype == np.uint8 and array.attrs["hcsgraph_kind"] == "str"
    assert store.load(tmp_path / "t.csv") == "ünïcode,text\n"
    store.save(b"", tmp_path / "empty.bin")
    assert store.load(tmp_path / "empty.bin") == b""


def test_unsupported_data_writes_nothing(store, tmp_path):
    arrays = [np.zeros((2, 2)), {"not": "an array"}]
    with pytest.raises(UnsupportedDataError) as info:
        store.save_batch(arrays, [tmp_path / "a", tmp_path / "b"])
    assert str(tmp_path / "b") in str(info.value) and "'zarr'" in str(info.value)
    assert os.listdir(tmp_path) == []


def test_batch_writes_atomically_and_leaves_no_temporaries(store, tmp_path):
    paths = [str(tmp_path / "w" / f"f{i}.tif") for i in range(20)]
    arrays = [np.full((8, 8), i, np.uint16) for i in range(20)]
    fm = FileManager(StorageRegistry({"zarr": store}))
    fm.save_batch(arrays, paths, "zarr", zarr_config=ZarrConfig(compressor="zstd", compression_level=3))
    assert not [n for n in os.listdir(tmp_path / "w") if n.startswith(TEMP_PREFIX)]
    assert [int(a[0, 0]) for a in fm.load_batch(paths, "zarr")] == list(range(20))
    with pytest.raises(StorageFileExistsError):
        fm.save_batch(arrays[:2], paths[:2], "zarr")
    fm.save_batch(arrays[::-1][:2], paths[:2], "zarr", overwrite=True)
    assert int(fm.load_array(paths[0], "zarr")[0, 0]) == 19


def test_plain_directories_and_files_are_not_arrays(store, tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "notes.txt").write_text("not zarr")
    store.save(np.zeros(3), tmp_path / "arr")
    assert store.list_files(tmp_path) == [str(tmp_path / "arr")]
    assert store.list_dir(tmp_path) == ["arr", "plain"]
