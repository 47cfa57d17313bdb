"""Physical metadata on the index: pixel size, z spacing, time interval, channel names and colours,
from each layout's published metadata files, None where they do not say, and the user's overrides."""

from __future__ import annotations

import pickle

import pytest

from hcsgraph.io.omezarr import create_plate
from hcsgraph.plate import PlateIndex, open_plate
from hcsgraph.plate.cellvoyager import parse_mes
from hcsgraph.plate.imagexpress import metaseries_pixel_size_um
from hcsgraph.plate.index import hex_colour
from hcsgraph.plate.synthetic import make_plate
from tests.plate.metadata_plates import cellvoyager_plate, imagexpress_plate, opera_phenix_plate


def test_opera_phenix_index_gives_pixel_size_z_spacing_time_interval_and_names(tmp_path):
    index = open_plate(opera_phenix_plate(tmp_path / "phenix"))
    assert index.source_format == "operaphenix"
    assert index.pixel_size_um == 0.299  # ImageResolutionX, 2.99E-07 m
    assert index.z_spacing_um == pytest.approx(1.5)  # PositionZ steps of one field, channel, time point
    assert index.time_interval_s == pytest.approx(600.0)  # AbsTime of the time points' first images
    assert index.channel_names == {1: "HOECHST 33342", 2: "Alexa 488"}
    assert index.channel_colors == {}  # Harmony's index names no colour


def test_cellvoyager_mrf_mlf_and_mes(tmp_path):
    index = open_plate(cellvoyager_plate(tmp_path / "cv"))
    assert index.source_format == "cellvoyager"
    assert index.pixel_size_um == 0.65  # .mrf HorizontalPixelDimension (µm)
    assert index.z_spacing_um == pytest.approx(2.0)  # .mlf Z of consecutive ZIndex
    assert index.time_interval_s == pytest.approx(300.0)  # .mlf Time of consecutive time points
    assert index.channel_names == {1: "DNA", 2: "Actin"}  # .mes Target (the .mrf has none)
    assert index.channel_colors == {1: "002FFF", 2: "00FF00"}  # .mes ARGB Color without its alpha
    assert not index.problems


def test_cellvoyager_without_its_setting_file_keeps_what_the_mrf_and_mlf_say(tmp_path):
    index = open_plate(cellvoyager_plate(tmp_path / "cv", setting=False))
    assert index.pixel_size_um == 0.65 and index.z_spacing_um == pytest.approx(2.0)
    assert index.channel_names == {1: "channel_1", 2: "channel_2"} and index.channel_colors == {}


def test_parse_mes_ignores_the_timeline_colour(tmp_path):
    root = cellvoyager_plate(tmp_path / "cv")
    meta = parse_mes(root / "Protocol.mes")
    assert meta["channel_colors"] == {1: "002FFF", 2: "00FF00"}  # not the Timeline's #ff44ee66
    assert meta["slice_length_um"] == 2.0


def test_imagexpress_without_metadata_has_an_unknown_pixel_size(tmp_path):
    index = open_plate(imagexpress_plate(tmp_path / "ix"))
    assert index.source_format == "imagexpress"
    assert index.pixel_size_um is None and index.z_spacing_um is None and index.time_interval_s is None
    assert index.channel_names == {1: "DAPI", 2: "FITC"} and index.channel_colors == {}


def test_imagexpress_pixel_size_from_metaxpress_tiff_descriptions(tmp_path):
    index = open_plate(imagexpress_plate(tmp_path / "ix", calibrated=True))
    assert index.pixel_size_um == 0.65


def test_metaseries_description_in_pixels_is_no_calibration():
    text = '<prop id="spatial-calibration-x" type="float" value="1"/><prop id="spatial-calibration-units" ' \
           'type="string" value="pixel"/>'
    assert metaseries_pixel_size_um(text) is None
    assert metaseries_pixel_size_um(text.replace('"pixel"', '"nm"').replace('value="1"', 'value="650"')) == 0.65
    assert metaseries_pixel_size_um("") is None


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_ome_zarr_input_scale_with_units_and_omero_colours(tmp_path, version):
    from hcsgraph.config import ZarrConfig

    path = tmp_path / "in.ome.zarr"
    create_plate(path, plate_name="P", wells=["A01"], fields=1, shape_tczyx=(2, 2, 3, 8, 8), dtype="uint16",
                 channel_names=["DAPI", "GFP"], channel_colors=["#FF112233", None], pixel_size_um=0.4,
                 z_spacing_um=2.0, time_interval_s=30.0, zarr_config=ZarrConfig(ome_zarr_version=version))
    index = open_plate(path)
    assert (index.pixel_size_um, index.z_spacing_um, index.time_interval_s) == (0.4, 2.0, 30.0)
    assert index.channel_names == {1: "DAPI", 2: "GFP"}
    assert index.channel_colors[1] == "112233"  # the instrument's colour; channel 2 got the default


def test_ome_zarr_input_scale_without_units_is_unknown(tmp_path):
    path = tmp_path / "in.ome.zarr"
    create_plate(path, plate_name="P", wells=["A01"], fields=1, shape_tczyx=(1, 1, 1, 8, 8), dtype="uint16",
                 channel_names=["DAPI"])
    index = open_plate(path)
    assert index.pixel_size_um is None and index.z_spacing_um is None and index.time_interval_s is None


def test_open_plate_overrides_win_over_the_metadata(tmp_path):
    root = imagexpress_plate(tmp_path / "ix")
    index = open_plate(root, pixel_size_um=0.65, z_spacing_um=1.0, time_interval_s=60)
    assert (index.pixel_size_um, index.z_spacing_um, index.time_interval_s) == (0.65, 1.0, 60.0)
    phenix = open_plate(opera_phenix_plate(tmp_path / "phenix"), pixel_size_um=0.5)
    assert phenix.pixel_size_um == 0.5 and phenix.z_spacing_um == pytest.approx(1.5)  # the rest from the index
    with pytest.raises(ValueError, match="pixel_size_um"):
        open_plate(root, pixel_size_um=0)
    with pytest.raises(ValueError, match="time_interval_s"):
        open_plate(root, time_interval_s="soon")


def test_synthetic_plates_carry_their_pixel_size(tmp_path):
    for layout in ("operaphenix", "cellvoyager"):
        plate = make_plate(tmp_path / layout, layout=layout, n_wells=1, sites=1, channels=1, z=2, size=32,
                           pixel_size_um=0.325)
        index = plate.index
        assert index.pixel_size_um == 0.325
    assert index.z_spacing_um == pytest.approx(2.0)  # the CellVoyager .mlf's Z
    assert make_plate(tmp_path / "ix", n_wells=1, sites=1, channels=1, size=32).index.pixel_size_um is None


def test_index_values_survive_pickling_and_bad_values_are_refused(tmp_path):
    index = open_plate(cellvoyager_plate(tmp_path / "cv"))
    again = pickle.loads(pickle.dumps(index))
    assert (again.pixel_size_um, again.z_spacing_um, again.time_interval_s, again.channel_colors) == \
           (0.65, 2.0, 300.0, {1: "002FFF", 2: "00FF00"})
    with pytest.raises(ValueError, match="z_spacing_um"):
        PlateIndex(index.table, name="x", root=str(tmp_path), source_format="x", z_spacing_um=-1)


def test_hex_colour():
    assert hex_colour("#FF0000FF") == "0000FF" and hex_colour("00ff00") == "00FF00" and hex_colour("red") is None
