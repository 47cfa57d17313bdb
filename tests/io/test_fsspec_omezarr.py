"""OME-Zarr plates and TIFF files written to object storage (a real S3 API: moto's server) equal the
same writes to a local folder, object for object and byte for byte."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from hcsgraph.config import ZarrConfig
from hcsgraph.io import location
from hcsgraph.io.omezarr import (
    create_plate,
    is_hcsgraph_plate,
    mark_well_complete,
    read_plate_attrs,
    set_channel_windows,
    well_is_complete,
    write_planes,
    zarr_store,
)
from hcsgraph.io.tiff import read_tiff, write_tiff_atomic
from hcsgraph.plate import open_plate, read_plane
from tests.s3server import unique_prefix

WELLS = ["A01", "B03"]
SHAPE = (1, 2, 3, 32, 40)  # T, C, Z, Y, X
METADATA = ("zarr.json", ".zattrs", ".zgroup", ".zarray")


def plate_kwargs(version: str, strategy: str) -> dict:
    return dict(plate_name="Out", wells=WELLS, fields=2, shape_tczyx=SHAPE, dtype="uint16",
                channel_names=["DAPI", "GFP"], pixel_size_um=0.5, n_levels=2,
                zarr_config=ZarrConfig(ome_zarr_version=version, chunk_strategy=strategy))


def fill(path, storage_options=None) -> dict:
    """Write every plane of the plate (two calls per field: c=0 then c=1) and return the data."""
    rng = np.random.default_rng(7)
    written = {}
    for well in WELLS:
        for field in range(2):
            data = rng.integers(0, 60000, (2, 3, 32, 40), dtype=np.uint16)
            written[(well, field)] = data
            for c in range(2):
                planes = [(0, c, z) for z in range(3)]
                write_planes(path, well, field, planes, data[c], n_levels=2, storage_options=storage_options)
    return written


@pytest.mark.parametrize(("version", "strategy"), [("0.5", "adaptive"), ("0.4", "adaptive"), ("0.5", "field")])
def test_plate_over_s3_equals_the_local_plate(tmp_path, version, strategy, s3_server, s3_storage_options):
    so = s3_storage_options
    local = tmp_path / "plate.ome.zarr"
    url = f"{unique_prefix('out')}/plate.ome.zarr"
    create_plate(local, **plate_kwargs(version, strategy))
    mark = s3_server.count()
    layout = create_plate(url, **plate_kwargs(version, strategy), storage_options=so)
    puts = [r for r in s3_server.since(mark) if r[0] == "PUT"]
    root_doc = "zarr.json" if version == "0.5" else ".zattrs"
    assert puts[-1][1].endswith(f"/plate.ome.zarr/{root_doc}"), puts[-3:]  # the root document last
    assert layout.path == url and is_hcsgraph_plate(url, storage_options=so)
    written = fill(local)
    assert fill(url, so).keys() == written.keys()
    assert set_channel_windows(local, {0: (10, 500), 1: (3, 40000)}) == 4
    assert set_channel_windows(url, {0: (10, 500), 1: (3, 40000)}, storage_options=so) == 4
    assert set_channel_windows(local, {0: (0, 900)}) == set_channel_windows(url, {0: (0, 900)}, storage_options=so)

    local_objects = location.find(local)
    remote_objects = location.find(url, so)
    assert local_objects.keys() == remote_objects.keys()
    for key in local_objects:
        local_bytes = (local / key).read_bytes()
        remote_bytes = location.read_bytes(f"{url}/{key}", so)
        if key.rsplit("/", 1)[-1] in METADATA:
            assert json.loads(remote_bytes) == json.loads(local_bytes), key
        else:
            assert remote_bytes == local_bytes, key  # every chunk, byte for byte
    assert read_plate_attrs(url, storage_options=so) == read_plate_attrs(local)

    for (well, field), data in written.items():
        row, column = well[0], int(well[1:])
        for level in range(2):
            array_path = f"{row}/{column}/{field}/{level}"
            remote = zarr.open_array(store=zarr_store(url, so, read_only=True), path=array_path, mode="r")
            here = zarr.open_array(store=str(local), path=array_path, mode="r")
            np.testing.assert_array_equal(remote[...], here[...])
        np.testing.assert_array_equal(remote_level0 := zarr.open_array(
            store=zarr_store(url, so, read_only=True), path=f"{row}/{column}/{field}/0", mode="r")[0], data)
        assert remote_level0.dtype == np.uint16

    index = open_plate(url, storage_options=so)  # the output plate is a plate to read, too
    first = index.select(well="B03", site=2, channel=2, z=3)["path"].iloc[0]
    np.testing.assert_array_equal(read_plane(first, storage_options=so), written[("B03", 1)][1, 2])


def test_create_plate_refuses_what_it_did_not_write_and_replaces_what_it_did(s3_storage_options):
    so = s3_storage_options
    base = unique_prefix("replace")
    url = f"{base}/plate.ome.zarr"
    create_plate(url, **plate_kwargs("0.5", "adaptive"), storage_options=so)
    fill(url, so)
    with pytest.raises(FileExistsError, match="already exists"):
        create_plate(url, **plate_kwargs("0.5", "adaptive"), storage_options=so)
    chunks = [k for k in location.find(url, so) if k.rsplit("/", 1)[-1] not in METADATA]
    assert chunks
    create_plate(url, **plate_kwargs("0.5", "adaptive"), storage_options=so, overwrite=True)
    assert is_hcsgraph_plate(url, storage_options=so)
    assert [k for k in location.find(url, so) if k.rsplit("/", 1)[-1] not in METADATA] == []  # old pixels gone
    location.write_text_atomic(f"{base}/theirs/notes.txt", "not a plate", so)
    with pytest.raises(FileExistsError, match="not an OME-Zarr plate written by hcsgraph"):
        create_plate(f"{base}/theirs", **plate_kwargs("0.5", "adaptive"), storage_options=so, overwrite=True)
    assert location.read_text(f"{base}/theirs/notes.txt", so) == "not a plate"
    location.remove(f"{url}/zarr.json", so)  # a plate without its root document: partial, never a plate
    assert not is_hcsgraph_plate(url, storage_options=so)
    assert not is_hcsgraph_plate(f"{base}/nothing", storage_options=so)


def test_well_records_and_missing_arrays_over_s3(s3_storage_options):
    so = s3_storage_options
    url = f"{unique_prefix('wells')}/plate.ome.zarr"
    create_plate(url, **plate_kwargs("0.5", "adaptive"), storage_options=so)
    assert not well_is_complete(url, "A01", storage_options=so)
    mark_well_complete(url, "A01", storage_options=so)
    assert well_is_complete(url, "A01", storage_options=so) and not well_is_complete(url, "B03", storage_options=so)
    with pytest.raises(FileNotFoundError, match="no array for well C07") as info:
        write_planes(url, "C07", 0, [(0, 0, 0)], np.zeros((1, 32, 40), np.uint16), storage_options=so)
    assert url in str(info.value)


def test_tiff_writes_over_s3_are_the_local_bytes(tmp_path, s3_server, s3_storage_options):
    so = s3_storage_options
    image = np.random.default_rng(1).integers(0, 4000, (3, 16, 24), dtype=np.uint16)
    url = f"{unique_prefix('tiff')}/images/A01/A01_s1_w1_z1_t1.tif"
    write_tiff_atomic(tmp_path / "a.tif", image)
    mark = s3_server.count()
    write_tiff_atomic(url, image, storage_options=so)
    assert [r[0] for r in s3_server.since(mark)] == ["PUT"]  # one PUT, no temporary object
    assert location.read_bytes(url, so) == (tmp_path / "a.tif").read_bytes()
    import io

    np.testing.assert_array_equal(read_tiff(io.BytesIO(location.read_bytes(url, so))), image)
