"""open_plate and read_plane on plates in object storage (a real S3 API: moto's server).

Every layout opened from ``s3://`` must give the index the same folder gives locally (the same table of
wells, sites, channels, z and t, the same metadata and problems) and the same pixels, with one listing
of the folder and no request per file; credentials never show in reprs, logs or errors.
"""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pandas as pd
import pytest

from hcsgraph.config import ZarrConfig
from hcsgraph.io.omezarr import create_plate, write_plane
from hcsgraph.plate import PlateLayoutError, PlateReadError, open_plate, read_plane
from hcsgraph.plate.synthetic import make_plate
from tests.s3server import unique_prefix, upload_folder

SECRET = "hunter2-SECRET-value-9b1f"
KEY_ID = "AKIDEXAMPLEKEY77"


def relative(frame: pd.DataFrame, root: str) -> pd.DataFrame:
    out = frame.copy()
    out["path"] = [p[len(root):].lstrip("/\\") for p in out["path"]]
    return out.reset_index(drop=True)


def assert_same_index(local, remote) -> None:
    pd.testing.assert_frame_equal(relative(local.table, local.root), relative(remote.table, remote.root))
    pd.testing.assert_frame_equal(relative(local.projections, local.root), relative(remote.projections, remote.root))
    pd.testing.assert_frame_equal(local.gaps.reset_index(drop=True), remote.gaps.reset_index(drop=True))
    assert remote.name == local.name and remote.source_format == local.source_format
    assert remote.channel_names == local.channel_names and remote.pixel_size_um == local.pixel_size_um
    assert remote.image_shape == local.image_shape and remote.dtype == local.dtype
    assert remote.unrecognized == local.unrecognized
    assert sorted(map(str, remote.problems)) == sorted(map(str, local.problems))
    assert (remote.wells, remote.sites, remote.channels, remote.z_planes, remote.timepoints) == (
        local.wells, local.sites, local.channels, local.z_planes, local.timepoints)


def assert_same_pixels(local, remote) -> None:
    for local_path, remote_path in zip(local.table["path"], remote.table["path"], strict=True):
        out = np.empty(remote.image_shape, remote.dtype)
        read_plane(remote_path, out=out, storage_options=remote.storage_options)
        np.testing.assert_array_equal(out, read_plane(local_path))


def uploaded(folder, s3_storage_options, name="plate") -> str:
    """The folder's copy in the bucket, under a fresh prefix and with the folder's own name."""
    url = f"{unique_prefix(name)}/{folder.name}"
    upload_folder(folder, url, s3_storage_options)
    return url


def requests_of(server, call):
    mark = server.count()
    result = call()
    return result, server.since(mark)


@pytest.mark.parametrize("layout", ["imagexpress", "operaphenix", "cellvoyager"])
def test_instrument_plates_over_s3_equal_the_local_folder(tmp_path, layout, s3_server, s3_storage_options):
    plate = make_plate(tmp_path / layout, layout=layout, sites=4, channels=2, size=48)
    url = uploaded(plate.path, s3_storage_options, layout)
    local = open_plate(plate.path)
    remote, requests = requests_of(s3_server, lambda: open_plate(url, storage_options=s3_storage_options))
    assert remote.root == url and all(p.startswith(url + "/") for p in remote.table["path"])
    assert len(remote) == 2 * 4 * 2
    assert_same_index(local, remote)
    assert_same_pixels(local, remote)
    # One listing of the folder; no request per file: the layout's metadata, the zarr probe and a
    # sample of 8 TIFF headers (one ranged GET each), whatever the plate's size.
    lists = [r for r in requests if "list-type=2" in r[1]]
    assert len(lists) == 1, requests
    assert not [r for r in requests if r[0] == "HEAD"], requests
    metadata_files = {"imagexpress": 1, "operaphenix": 1, "cellvoyager": 2}[layout]
    assert len(requests) == 2 + 1 + metadata_files + 8, requests


def test_plane_reads_are_one_get_each(tmp_path, s3_server, s3_storage_options):
    plate = make_plate(tmp_path / "p", layout="imagexpress", sites=4, channels=2, size=48)
    remote = open_plate(uploaded(plate.path, s3_storage_options), storage_options=s3_storage_options)
    out = np.empty(remote.image_shape, remote.dtype)
    _, requests = requests_of(s3_server, lambda: [read_plane(p, out=out, storage_options=remote.storage_options)
                                                  for p in remote.table["path"]])
    assert [r[0] for r in requests] == ["GET"] * len(remote)


def test_imagexpress_z_series_time_points_and_skipped_folders(tmp_path, s3_storage_options, tiff):
    plate = make_plate(tmp_path / "ix", layout="imagexpress", sites=2, channels=2, z=2, t=2, size=32)
    root = plate.path
    (root / "notes.bin").write_bytes(b"x")  # unrecognised
    tiff(root / "TimePoint_1" / "SynthPlate_A01_s1_w1_thumb.tif")  # a thumbnail: skipped
    tiff(root / ".hidden" / "SynthPlate_A09_s1_w1.tif")  # hidden: skipped
    (root / "results" / ".hcsgraph").mkdir(parents=True)  # an hcsgraph output: skipped, reported
    (root / "results" / ".hcsgraph" / "state.json").write_text("{}")
    (root / "results" / "run.json").write_text("{}")
    tiff(root / "results" / "A01_s1_w1.tif")
    (root / "store.zarr").mkdir()  # a Zarr store: skipped, reported
    (root / "store.zarr" / "zarr.json").write_text('{"node_type": "group", "zarr_format": 3}')
    tiff(root / "store.zarr" / "A01_s1_w1.tif")
    local = open_plate(root)
    remote = open_plate(uploaded(root, s3_storage_options), storage_options=s3_storage_options)
    assert {p.kind for p in local.problems} >= {"skipped hcsgraph output", "skipped zarr store"}
    assert local.unrecognized == ["notes.bin"]
    assert_same_index(local, remote)
    assert_same_pixels(local, remote)


def test_pattern_plate_over_s3(tmp_path, s3_storage_options, tiff):
    for index, well in enumerate(("C03", "C10")):
        for site in (1, 2):
            for channel in ("DAPI", "Actin"):
                tiff(tmp_path / "p" / well / f"img_f{site}_{channel}.tif", value=index * 100 + site)
    pattern = r"(?P<well>[A-P]\d{2})/img_f(?P<site>\d+)_(?P<channel>\w+)\.tif"
    local = open_plate(tmp_path / "p", pattern=pattern)
    remote = open_plate(uploaded(tmp_path / "p", s3_storage_options), pattern=pattern,
                        storage_options=s3_storage_options)
    assert remote.source_format == "pattern" and remote.channel_names == {1: "Actin", 2: "DAPI"}
    assert_same_index(local, remote)
    assert_same_pixels(local, remote)


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_ome_zarr_plate_over_s3(tmp_path, version, s3_server, s3_storage_options):
    path = tmp_path / "in.zarr"
    create_plate(path, plate_name="Input", wells=["A01", "D07"], fields=2, shape_tczyx=(2, 2, 3, 8, 10),
                 dtype="uint16", channel_names=["Hoechst", "Tubulin"], pixel_size_um=0.4,
                 zarr_config=ZarrConfig(ome_zarr_version=version))
    rng = np.random.default_rng(3)
    for well in ("A01", "D07"):
        for field in (0, 1):
            for t, c, z in np.ndindex(2, 2, 3):
                write_plane(path, well, field, t, c, z, rng.integers(0, 4000, (8, 10), dtype=np.uint16))
    url = uploaded(path, s3_storage_options, "zarr")
    local = open_plate(path)
    remote, requests = requests_of(s3_server, lambda: open_plate(url, storage_options=s3_storage_options))
    assert remote.source_format == "omezarr" and len(remote) == 2 * 2 * 2 * 2 * 3
    assert remote.table["path"].iloc[0].startswith(f"{url}/A/1/0/0#")
    assert_same_index(local, remote)
    assert_same_pixels(local, remote)
    # Never listed: the documents of the plate, its wells, fields and arrays, one round each.
    assert not [r for r in requests if "list-type" in r[1]], requests
    documents = 1 + 2 + 4 + 4  # plate, wells, fields, arrays: each one GET (v2: a zarr.json miss first)
    assert len(requests) == (documents if version == "0.5" else 2 * documents), requests


def test_storage_options_travel_with_the_index_and_never_show(tmp_path, s3_endpoint, caplog, tiff):
    options = {"client_kwargs": {"endpoint_url": s3_endpoint}, "key": KEY_ID, "secret": SECRET}
    plate = make_plate(tmp_path / "p", layout="imagexpress", sites=1, channels=1, size=32)
    tiff(plate.path / "TimePoint_1" / "stray.tif")  # an unrecognised file: logged with the root
    url = uploaded(plate.path, options)
    caplog.set_level(logging.DEBUG, logger="hcsgraph")
    index = open_plate(url.replace("s3://", f"s3://{KEY_ID}:{SECRET}@"),
                       storage_options={"client_kwargs": {"endpoint_url": s3_endpoint}})
    assert index.root == url  # credentials moved out of the URL into the options
    assert dict(index.storage_options) == options
    for text in (repr(index), str(index), repr(index.storage_options), str(index.storage_options),
                 caplog.text, index.table.to_string(), str(index.problems)):
        assert SECRET not in text and KEY_ID not in text
    assert "secret='***'" in repr(index.storage_options) and s3_endpoint in repr(index.storage_options)
    clone = pickle.loads(pickle.dumps(index))
    assert dict(clone.storage_options) == options
    first = clone.table["path"].iloc[0]
    np.testing.assert_array_equal(read_plane(first, storage_options=clone.storage_options),
                                  read_plane(index.table["path"].iloc[0], storage_options=options))


def test_missing_and_bad_remote_plates_name_the_url(tmp_path, s3_storage_options, tiff):
    missing = unique_prefix("missing")
    with pytest.raises(FileNotFoundError, match="plate directory not found") as info:
        open_plate(missing, storage_options=s3_storage_options)
    assert missing in str(info.value)
    tiff(tmp_path / "one" / "a.tif")
    url = uploaded(tmp_path / "one", s3_storage_options)
    with pytest.raises(PlateLayoutError, match="is a file"):
        open_plate(f"{url}/a.tif", storage_options=s3_storage_options)
    with pytest.raises(PlateLayoutError, match="no plate layout recognised"):
        open_plate(url, storage_options=s3_storage_options)


def test_remote_read_errors_name_the_url_never_the_secret(tmp_path, s3_endpoint, tiff):
    options = {"client_kwargs": {"endpoint_url": s3_endpoint}, "key": KEY_ID, "secret": SECRET}
    tiff(tmp_path / "f" / "good.tif")
    (tmp_path / "f" / "empty.tif").write_bytes(b"")
    data = (tmp_path / "f" / "good.tif").read_bytes()
    (tmp_path / "f" / "cut.tif").write_bytes(data[: len(data) // 2])
    url = uploaded(tmp_path / "f", options)
    assert read_plane(f"{url}/good.tif", storage_options=options).shape == (8, 8)
    cases = {"missing.tif": "file not found", "empty.tif": "empty", "cut.tif": "truncated",
             "in.zarr/A/1/0/0#t=0,c=0,z=0": "no Zarr array"}
    for name, reason in cases.items():
        with pytest.raises(PlateReadError, match=reason) as info:
            read_plane(f"{url}/{name}", out=np.empty((8, 8), np.uint16), storage_options=options)
        assert f"{url}/" in str(info.value) and SECRET not in str(info.value) and KEY_ID not in str(info.value)
    with pytest.raises(PlateReadError, match="the image is 8x8 uint16"):
        read_plane(f"{url}/good.tif", out=np.empty((4, 4), np.uint16), storage_options=options)
