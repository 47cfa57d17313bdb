"""Instrument metadata carried through a run: from each layout's metadata files into the OME-Zarr output
(scale with units, omero channel labels and colours, valid NGFF 0.5 and 0.4) and into ``hcsgraph info``;
unknown where the instrument does not say. And a CellVoyager plate runs the cell-count pipeline."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import zarr
from click.testing import CliRunner

from hcsgraph import FunctionStep, GlobalPipelineConfig, Pipeline, ZarrConfig
from hcsgraph.cli import main
from hcsgraph.demo import cell_count_pipeline, compare_counts
from hcsgraph.plate import open_plate
from hcsgraph.plate.synthetic import make_plate
from tests.plate.metadata_plates import cellvoyager_plate, imagexpress_plate, opera_phenix_plate


def _run(index, out: Path, version: str = "0.5") -> Path:
    config = GlobalPipelineConfig(zarr=ZarrConfig(ome_zarr_version=version))
    result = Pipeline([FunctionStep("gaussian_filter")], name="p").compile(index, out, config).compute(
        scheduler="threads")
    return Path(result.image_store)


def _field_attrs(store: Path, field: str) -> dict:
    if (store / "zarr.json").is_file():
        return json.loads((store / field / "zarr.json").read_text())["attributes"]["ome"]
    return json.loads((store / field / ".zattrs").read_text())


def _validate(store: Path, field: str, version: str) -> None:
    import ome_zarr_models.v04 as v04
    import ome_zarr_models.v05 as v05

    models = v05 if version == "0.5" else v04
    group = zarr.open_group(store, mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models.HCS.from_zarr(group)
        models.Image.from_zarr(group[field])


def _info(path: Path) -> list[str]:
    result = CliRunner().invoke(main, ["info", str(path)])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def _scale_and_units(attrs: dict) -> tuple[list[float], dict[str, str | None]]:
    multiscale = attrs["multiscales"][0]
    scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
    return scale, {a["name"]: a.get("unit") for a in multiscale["axes"]}


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_opera_phenix_metadata_reach_the_output_and_info(tmp_path, version):
    plate = opera_phenix_plate(tmp_path / "phenix")
    store = _run(open_plate(plate), tmp_path / "out", version)
    attrs = _field_attrs(store, "B/3/0")
    scale, units = _scale_and_units(attrs)
    assert scale == pytest.approx([600.0, 1.0, 1.5, 0.299, 0.299])
    assert units == {"t": "second", "c": None, "z": "micrometer", "y": "micrometer", "x": "micrometer"}
    assert [c["label"] for c in attrs["omero"]["channels"]] == ["HOECHST 33342", "Alexa 488"]
    _validate(store, "B/3/0", version)
    lines = _info(plate)
    assert "pixel size: 0.299 µm" in lines and "z spacing: 1.5 µm" in lines and "time interval: 600 s" in lines
    assert "channels: 1=HOECHST 33342, 2=Alexa 488" in lines
    # and the output, read back as a plate, says the same
    out_lines = _info(store)
    assert "pixel size: 0.299 µm" in out_lines and "z spacing: 1.5 µm" in out_lines
    assert "time interval: 600 s" in out_lines


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_cellvoyager_metadata_and_colours_reach_the_output_and_info(tmp_path, version):
    plate = cellvoyager_plate(tmp_path / "cv")
    store = _run(open_plate(plate), tmp_path / "out", version)
    attrs = _field_attrs(store, "B/2/0")
    scale, units = _scale_and_units(attrs)
    assert scale == pytest.approx([300.0, 1.0, 2.0, 0.65, 0.65])
    assert units["x"] == units["y"] == units["z"] == "micrometer" and units["t"] == "second"
    channels = attrs["omero"]["channels"]
    assert [(c["label"], c["color"]) for c in channels] == [("DNA", "002FFF"), ("Actin", "00FF00")]
    _validate(store, "B/2/0", version)
    lines = _info(plate)
    assert "pixel size: 0.65 µm" in lines and "z spacing: 2 µm" in lines and "time interval: 300 s" in lines
    assert "channels: 1=DNA (#002FFF), 2=Actin (#00FF00)" in lines


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_imagexpress_without_metadata_says_unknown(tmp_path, version):
    plate = imagexpress_plate(tmp_path / "ix")
    store = _run(open_plate(plate), tmp_path / "out", version)
    attrs = _field_attrs(store, "A/1/0")
    scale, units = _scale_and_units(attrs)
    assert scale == [1.0, 1.0, 1.0, 1.0, 1.0]
    assert all(unit is None for unit in units.values())  # scale 1 without a unit: not "1 µm"
    assert [c["label"] for c in attrs["omero"]["channels"]] == ["DAPI", "FITC"]
    _validate(store, "A/1/0", version)
    assert "pixel size: unknown" in _info(plate)
    out_lines = _info(store)
    assert "pixel size: unknown" in out_lines and not any("1.0 µm" in line for line in out_lines)


def test_imagexpress_pixel_size_given_by_the_user_or_metaxpress(tmp_path):
    plate = imagexpress_plate(tmp_path / "ix")
    store = _run(open_plate(plate, pixel_size_um=0.65), tmp_path / "out")
    scale, units = _scale_and_units(_field_attrs(store, "A/1/0"))
    assert scale == pytest.approx([1.0, 1.0, 1.0, 0.65, 0.65]) and units["x"] == "micrometer"
    assert units["z"] is None and units["t"] is None
    assert "pixel size: 0.65 µm" in _info(store)
    calibrated = imagexpress_plate(tmp_path / "ix-cal", calibrated=True)
    assert "pixel size: 0.65 µm" in _info(calibrated)


def test_ome_zarr_input_carries_its_metadata_through(tmp_path):
    first = _run(open_plate(cellvoyager_plate(tmp_path / "cv")), tmp_path / "first")
    index = open_plate(first)
    assert (index.pixel_size_um, index.z_spacing_um, index.time_interval_s) == (0.65, 2.0, 300.0)
    second = _run(index, tmp_path / "second", "0.4")
    attrs = _field_attrs(second, "B/2/0")
    scale, _ = _scale_and_units(attrs)
    assert scale == pytest.approx([300.0, 1.0, 2.0, 0.65, 0.65])
    assert [(c["label"], c["color"]) for c in attrs["omero"]["channels"]] == [("DNA", "002FFF"), ("Actin", "00FF00")]


def test_cellvoyager_plate_runs_the_cell_count_pipeline(tmp_path):
    plate = make_plate(tmp_path / "cv", layout="cellvoyager", n_wells=2, sites=2, channels=1, size=(128, 128),
                       seed=3)
    index = open_plate(plate.path)
    assert index.source_format == "cellvoyager" and index.pixel_size_um == plate.pixel_size_um
    result = cell_count_pipeline().compile(index, tmp_path / "out").compute(scheduler="threads")
    assert result.ok, result.failures
    counts = result.special_outputs["cell_counts"]
    comparison = compare_counts(counts, plate.ground_truth, tolerance=0.10)
    assert len(comparison) == len(plate.ground_truth) == 4
    assert comparison["detected"].notna().all()
    assert comparison["within"].all(), comparison.to_string()
    scale, units = _scale_and_units(_field_attrs(Path(result.image_store), "A/1/0"))
    assert scale[-1] == pytest.approx(plate.pixel_size_um) and units["x"] == "micrometer"
