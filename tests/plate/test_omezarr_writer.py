"""The OME-Zarr HCS plate writer: metadata, validation, independent read-back, chunking, parallel writes."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import zarr

from hcsgraph.config import ZarrConfig
from hcsgraph.io.omezarr import (
    create_plate,
    mark_well_complete,
    plan_chunks,
    well_is_complete,
    write_field,
    write_plane,
    write_stack,
)

WELLS = ["A01", "B03", "P24"]
SHAPE = (2, 2, 3, 40, 52)  # T, C, Z, Y, X


def _pixels(seed: int, shape=SHAPE, dtype="uint16") -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, size=shape).astype(dtype)


def _fill(path, layout, n_levels: int) -> dict[tuple[str, int], np.ndarray]:
    """Write every plane of every field with write_plane; return the data written."""
    written = {}
    for w, well in enumerate(layout.wells):
        for field in range(layout.fields):
            data = _pixels(10 * w + field, layout.shape_tczyx, layout.dtype)
            for t, c, z in np.ndindex(*layout.shape_tczyx[:3]):
                write_plane(path, well, field, t, c, z, data[t, c, z], n_levels=n_levels)
            written[(well, field)] = data
    return written


def _validate(path, version: str) -> None:
    import ome_zarr_models.v04 as v04
    import ome_zarr_models.v05 as v05

    models = v05 if version == "0.5" else v04
    group = zarr.open_group(path, mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hcs = models.HCS.from_zarr(group)
        assert hcs.n_wells == len(WELLS)
        for well in hcs.well_groups:
            attrs = well.attributes.ome if version == "0.5" else well.attributes
            assert len(attrs.well.images) == 2
        models.Image.from_zarr(group["P/24/1"])


def _read_back_ome_zarr_py(path: str) -> list[np.ndarray]:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    node = next(iter(Reader(parse_url(path))()))
    return [np.asarray(level) for level in node.data], node.metadata


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_plate_validates_and_reads_back(tmp_path, version):
    path = str(tmp_path / "plate.zarr")
    config = ZarrConfig(ome_zarr_version=version, compressor="zstd", compression_level=3)
    layout = create_plate(path, plate_name="Screen", wells=WELLS, fields=2, shape_tczyx=SHAPE, dtype="uint16",
                          channel_names=["DAPI", "GFP"], pixel_size_um=0.65, z_spacing_um=2.0,
                          zarr_config=config, n_levels=2, rows=[chr(65 + i) for i in range(16)],
                          columns=list(range(1, 25)))
    written = _fill(path, layout, n_levels=2)
    _validate(path, version)
    for (well, field), data in written.items():
        row, col = well[0], int(well[1:])
        levels, meta = _read_back_ome_zarr_py(f"{path}/{row}/{col}/{field}")
        np.testing.assert_array_equal(levels[0], data)
        assert levels[0].dtype == np.uint16
        assert levels[1].shape == (2, 2, 3, 20, 26)
        expected = data.reshape(2, 2, 3, 20, 2, 26, 2).mean(axis=(4, 6))
        np.testing.assert_array_equal(levels[1], np.rint(expected).astype(np.uint16))
        assert meta["channel_names"] == ["DAPI", "GFP"]
    root = zarr.open_group(path, mode="r")
    array = root["B/3/0/0"]
    attrs = dict(root["B/3/0"].attrs)
    image = attrs["ome"] if version == "0.5" else attrs
    scale = image["multiscales"][0]["datasets"][1]["coordinateTransformations"][0]["scale"]
    assert scale == [1.0, 1.0, 2.0, 1.3, 1.3]
    window = image["omero"]["channels"][0]["window"]
    assert (window["min"], window["max"]) == (0, 65535)
    assert image["omero"]["channels"][0]["color"] == "0000FF"
    if version == "0.5":
        assert array.metadata.zarr_format == 3
        assert array.metadata.dimension_names == ("t", "c", "z", "y", "x")
        meta = json.loads((tmp_path / "plate.zarr/B/3/0/0/zarr.json").read_text())
        assert any(c["name"] == "zstd" and c["configuration"]["level"] == 3 for c in meta["codecs"])
    else:
        meta = json.loads((tmp_path / "plate.zarr/B/3/0/0/.zarray").read_text())
        assert meta["compressor"]["id"] == "zstd" and meta["compressor"]["level"] == 3
        assert meta["dimension_separator"] == "/"


def test_adaptive_tiles_and_shards_one_file_per_plane(tmp_path):
    config = ZarrConfig(max_chunk_bytes=64 * 64 * 2, shard_min_chunks=4, compressor="lz4", compression_level=5)
    chunks, shards = plan_chunks((1, 2, 2, 256, 200), np.dtype("uint16"), config)
    assert chunks == (1, 1, 1, 64, 64) and shards == (1, 1, 1, 256, 256)
    assert plan_chunks((1, 2, 2, 32, 32), np.dtype("uint16"), config) == ((1, 1, 1, 32, 32), None)
    v2 = ZarrConfig(ome_zarr_version="0.4", max_chunk_bytes=64 * 64 * 2, shard_min_chunks=4)
    assert plan_chunks((1, 2, 2, 256, 200), np.dtype("uint16"), v2) == ((1, 1, 1, 64, 64), None)

    path = tmp_path / "big.zarr"
    create_plate(path, plate_name="p", wells=["A01"], fields=1, shape_tczyx=(1, 2, 2, 256, 200),
                 dtype="uint16", channel_names=["a", "b"], zarr_config=config)
    data = _pixels(3, (1, 2, 2, 256, 200))
    write_plane(path, "A01", 0, 0, 1, 0, data[0, 1, 0])
    chunk_files = [p for p in (path / "A/1/0/0/c").rglob("*") if p.is_file()]
    assert len(chunk_files) == 1  # one shard holds the whole plane
    write_plane(path, "A01", 0, 0, 0, 1, data[0, 0, 1])
    array = zarr.open_array(path / "A/1/0/0", mode="r")
    assert array.shards == (1, 1, 1, 256, 256) and array.chunks == (1, 1, 1, 64, 64)
    np.testing.assert_array_equal(array[0, 1, 0], data[0, 1, 0])
    np.testing.assert_array_equal(array[0, 0, 1], data[0, 0, 1])
    assert not array[0, 0, 0].any()


def test_field_and_well_strategies(tmp_path):
    data = _pixels(5, (1, 2, 3, 16, 16))
    for strategy, chunks in (("field", (1, 1, 3, 16, 16)), ("well", (1, 2, 3, 16, 16))):
        path = tmp_path / f"{strategy}.zarr"
        layout = create_plate(path, plate_name="p", wells=["C05"], fields=1, shape_tczyx=data.shape,
                              dtype="uint16", channel_names=["a", "b"],
                              zarr_config=ZarrConfig(chunk_strategy=strategy))
        assert layout.chunks == (chunks,)
        if strategy == "field":
            for c in range(2):
                write_stack(path, "C05", 0, 0, c, data[0, c])
        else:
            write_field(path, "C05", 0, data)
        np.testing.assert_array_equal(zarr.open_array(path / "C/5/0/0", mode="r")[:], data)


def test_existing_path_and_overwrite(tmp_path):
    path = tmp_path / "p.zarr"
    kwargs = dict(plate_name="p", wells=["A01"], fields=1, shape_tczyx=(1, 1, 1, 8, 8), dtype="uint8",
                  channel_names=["a"])
    create_plate(path, **kwargs)
    write_plane(path, "A01", 0, 0, 0, 0, np.full((8, 8), 7, np.uint8))
    with pytest.raises(FileExistsError, match="p.zarr"):
        create_plate(path, **kwargs)
    assert zarr.open_array(path / "A/1/0/0", mode="r")[0, 0, 0, 0, 0] == 7  # untouched
    create_plate(path, **(kwargs | {"wells": ["B02"]}), overwrite=True)
    assert (path / "B/2/0/0").exists() and not (path / "A").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["p.zarr"]  # no temporary leftovers


def test_bad_writes_name_the_well(tmp_path):
    path = tmp_path / "p.zarr"
    create_plate(path, plate_name="p", wells=["A01"], fields=1, shape_tczyx=(1, 1, 1, 8, 8), dtype="uint8",
                 channel_names=["a"])
    with pytest.raises(ValueError, match="well A01.*shape"):
        write_plane(path, "A01", 0, 0, 0, 0, np.zeros((8, 9), np.uint8))
    with pytest.raises(TypeError, match="well A01.*float64"):
        write_plane(path, "A01", 0, 0, 0, 0, np.zeros((8, 8), np.float64))
    with pytest.raises(FileNotFoundError, match="well B01"):
        write_plane(path, "B01", 0, 0, 0, 0, np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="channel names"):
        create_plate(tmp_path / "q.zarr", plate_name="p", wells=["A01"], fields=1, shape_tczyx=(1, 2, 1, 8, 8),
                     dtype="uint8", channel_names=["a"])
    assert not well_is_complete(path, "A01")
    mark_well_complete(path, "A01")
    assert well_is_complete(path, "A01")


def test_parallel_plane_writes_on_a_cluster(tmp_path, client):
    path = str(tmp_path / "par.zarr")
    config = ZarrConfig(max_chunk_bytes=32 * 32 * 2, shard_min_chunks=2)
    layout = create_plate(path, plate_name="p", wells=["A01", "A02"], fields=2, shape_tczyx=(1, 2, 2, 64, 64),
                          dtype="uint16", channel_names=["a", "b"], zarr_config=config, n_levels=2)
    assert layout.shards[0] == (1, 1, 1, 64, 64)
    data = {(w, f): _pixels(7 * i + f, layout.shape_tczyx) for i, w in enumerate(layout.wells) for f in range(2)}
    futures = [client.submit(write_plane, path, w, f, t, c, z, arr[t, c, z], n_levels=2, pure=False)
               for (w, f), arr in data.items() for t, c, z in np.ndindex(1, 2, 2)]
    client.gather(futures)
    for (w, f), arr in data.items():
        stored = zarr.open_array(f"{path}/{layout.array_path(w, f)}", mode="r")[:]
        np.testing.assert_array_equal(stored, arr)
