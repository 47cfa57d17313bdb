"""Tiny plates whose layout and metadata files follow each instrument's published format, with the
physical metadata (pixel size, z spacing, time interval, channel names and colours) the issue asks to
carry. Shared by tests/plate/test_metadata.py and tests/pipeline/test_metadata_carried.py.

Each builder writes 8x8 (or ``size``) uint16 TIFFs and returns the plate folder.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import tifffile

BTS = "http://www.yokogawa.co.jp/BTS/BTSSchema/1.0"


def _image(path: Path, value: int, size: int, description: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (np.arange(size * size).reshape(size, size) % 97 + value).astype("uint16")
    tifffile.imwrite(path, data, description=description, metadata=None)


def opera_phenix_plate(root: Path, *, size: int = 8) -> Path:
    """A Harmony 6 ``Images/Index.idx.xml``: 1 well, 1 field, 2 channels, 3 planes 1.5 µm apart
    (``PositionZ`` in m), 2 time points 600 s apart (``AbsTime``), 0.299 µm pixels (``ImageResolutionX``
    in m). Harmony writes no channel colour."""
    images = root / "Images"
    images.mkdir(parents=True)
    names = {1: "HOECHST 33342", 2: "Alexa 488"}
    start = datetime(2023, 5, 4, 9, 30, 0, tzinfo=timezone(timedelta(hours=2)))
    entries = "".join(
        f'<Entry ChannelID="{c}"><ChannelID>{c}</ChannelID><ChannelName>{n}</ChannelName>'
        "<ImageType>Signal</ImageType><AcquisitionType>NipkowConfocal</AcquisitionType>"
        '<ImageResolutionX Unit="m">2.99E-07</ImageResolutionX><ImageResolutionY Unit="m">2.99E-07</ImageResolutionY>'
        f"<ImageSizeX>{size}</ImageSizeX><ImageSizeY>{size}</ImageSizeY><BinningX>2</BinningX>"
        "<MainExcitationWavelength Unit=\"nm\">375</MainExcitationWavelength></Entry>"
        for c, n in names.items())
    body = []
    for sk in (1, 2):
        for p in (1, 2, 3):
            for ch in names:
                name = f"r02c03f01p{p:02d}-ch{ch}sk{sk}fk1fl1.tiff"
                _image(images / name, 10 * sk + p + ch, size)
                when = start + timedelta(seconds=600 * (sk - 1) + 2 * p + ch)
                body.append(
                    f'<Image Version="1"><id>0203K{sk}F1P{p}R{ch}</id><State>Ok</State><URL>{name}</URL>'
                    f"<Row>2</Row><Col>3</Col><FieldID>1</FieldID><PlaneID>{p}</PlaneID>"
                    f"<TimepointID>{sk - 1}</TimepointID><FlimID>1</FlimID><ChannelID>{ch}</ChannelID>"
                    f"<ChannelName>{names[ch]}</ChannelName>"
                    '<ImageResolutionX Unit="m">2.99E-07</ImageResolutionX>'
                    '<ImageResolutionY Unit="m">2.99E-07</ImageResolutionY>'
                    '<PositionX Unit="m">-0.00062</PositionX><PositionY Unit="m">0.00062</PositionY>'
                    f'<PositionZ Unit="m">{(p - 2) * 1.5e-6 + 0.2e-6 * ch:.4E}</PositionZ>'
                    f'<AbsPositionZ Unit="m">{0.1349 + (p - 2) * 1.5e-6:.9f}</AbsPositionZ>'
                    f'<MeasurementTimeOffset Unit="s">{600 * (sk - 1) + 2 * p + ch}</MeasurementTimeOffset>'
                    f"<AbsTime>{when.isoformat(timespec='milliseconds')}</AbsTime></Image>")
    (images / "Index.idx.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\r\n'
        '<EvaluationInputData xmlns:xsd="http://www.w3.org/2001/XMLSchema" Version="2" '
        'xmlns="http://www.perkinelmer.com/PEHH/HarmonyV6">\r\n'
        "  <User>Harmony</User><InstrumentType>Phenix</InstrumentType>\r\n"
        "  <Plates><Plate><PlateID>PID</PlateID><MeasurementID>M1</MeasurementID><Name>Kinetics</Name>"
        "<PlateTypeName>96 PerkinElmer CellCarrier Ultra</PlateTypeName></Plate></Plates>\r\n"
        "  <Wells><Well><id>0203</id><Row>2</Row><Col>3</Col></Well></Wells>\r\n"
        f"  <Maps><Map>{entries}</Map></Maps>\r\n"
        f"  <Images>{''.join(body)}</Images>\r\n</EvaluationInputData>\r\n", encoding="utf-8")
    return root


def cellvoyager_plate(root: Path, *, size: int = 8, setting: bool = True) -> Path:
    """A CV8000 measurement: ``MeasurementData.mlf`` (records with ``Time`` and ``Z`` in µm: 3 planes 2 µm
    apart, 2 time points 300 s apart), ``MeasurementDetail.mrf`` (0.65 µm pixels, naming the setting)
    and, with ``setting``, the ``.mes`` it names (channel targets and ARGB colours)."""
    root.mkdir(parents=True)
    records = []
    start = datetime(2024, 2, 1, 8, 0, 0, tzinfo=timezone(timedelta(hours=9)))
    for t in (1, 2):
        for z in (1, 2, 3):
            for ch in (1, 2):
                name = f"CV_B02_T{t:04d}F001L01A01Z{z:02d}C{ch:02d}.tif"
                _image(root / name, 10 * t + z + ch, size)
                when = start + timedelta(seconds=300 * (t - 1) + z + 3 * ch)
                records.append(
                    f'<bts:MeasurementRecord bts:Time="{when.isoformat(timespec="milliseconds")}" bts:Column="2" '
                    f'bts:Row="2" bts:FieldIndex="1" bts:TimePoint="{t}" bts:TimelineIndex="1" bts:X="-1.5" '
                    f'bts:Y="2.5" bts:Value="0" bts:Type="IMG" bts:ZIndex="{z}" bts:Z="{10.0 + 2.0 * z:.1f}" '
                    f'bts:ActionIndex="1" bts:Action="3D" bts:Ch="{ch}">{name}</bts:MeasurementRecord>')
    (root / "MeasurementData.mlf").write_text(
        f'<?xml version="1.0" encoding="utf-8"?>\r\n<bts:MeasurementData xmlns:bts="{BTS}" bts:Version="1.0">\r\n  '
        + "\r\n  ".join(records) + "\r\n</bts:MeasurementData>\r\n", encoding="utf-8")
    channels = "".join(
        f'<bts:MeasurementChannel bts:Ch="{ch}" bts:HorizontalPixelDimension="0.65" '
        f'bts:VerticalPixelDimension="0.65" bts:CameraNumber="1" bts:InputBitDepth="16" bts:InputLevel="65535" '
        f'bts:HorizontalPixels="{size}" bts:VerticalPixels="{size}" bts:FilterWheelPosition="{ch}" />'
        for ch in (1, 2))
    (root / "MeasurementDetail.mrf").write_text(
        f'<?xml version="1.0" encoding="utf-8"?>\r\n<bts:MeasurementDetail bts:Version="1.0" bts:OperatorName="op" '
        'bts:Title="CV" bts:BeginTime="2024-02-01T08:00:00+09:00" bts:EndTime="2024-02-01T08:10:00+09:00" '
        'bts:MeasurementSettingFileName="Protocol.mes" bts:ColumnCount="24" bts:RowCount="16" '
        f'bts:TargetSystem="CV8000" bts:ReleaseNumber="R2" xmlns:bts="{BTS}">\r\n'
        '  <bts:MeasurementSamplePlate bts:Name="PL1" bts:WellPlateFileName="PL1.wpi" bts:WellPlateProductFileName="x.wpp" />\r\n'
        f"  {channels}\r\n</bts:MeasurementDetail>\r\n", encoding="utf-8")
    if setting:
        (root / "Protocol.mes").write_text(
            f'<?xml version="1.0" encoding="utf-8"?>\r\n<bts:MeasurementSetting xmlns:bts="{BTS}" bts:Version="1.0">\r\n'
            '  <bts:Timelapse><bts:Timeline bts:Name="TL1" bts:InitialTime="0" bts:Period="300" bts:Interval="0" '
            'bts:Color="#ff44ee66"><bts:ActionList>'
            '<bts:ActionAcquire3D bts:TopDistance="2" bts:BottomDistance="-2" bts:SliceLength="2" '
            'bts:UseSoftFocus="false"><bts:Ch>1</bts:Ch><bts:Ch>2</bts:Ch></bts:ActionAcquire3D>'
            "</bts:ActionList></bts:Timeline></bts:Timelapse>\r\n"
            "  <bts:ChannelList>\r\n"
            '    <bts:Channel bts:Ch="1" bts:Target="DNA" bts:Objective="20x" bts:ExposureTime="50" '
            'bts:Color="#FF002FFF" bts:Kind="ConfocalFluorescence"><bts:LightSourceName>405nm</bts:LightSourceName>'
            "</bts:Channel>\r\n"
            '    <bts:Channel bts:Ch="2" bts:Target="Actin" bts:ExposureTime="20" bts:Color="#FF00FF00" '
            'bts:Kind="ConfocalFluorescence" />\r\n'
            "  </bts:ChannelList>\r\n</bts:MeasurementSetting>\r\n", encoding="utf-8")
    return root


def _metaseries(pixel_size_um: float, wave: str) -> str:
    """A MetaXpress TIFF description (MetaSeries XML) with a spatial calibration."""
    return ('<MetaData>\r\n<prop id="Description" type="string" value="Exposure: 20 ms"/>\r\n'
            '<prop id="MetaDataVersion" type="float" value="1"/>\r\n'
            '<PlaneInfo>\r\n<prop id="acquisition-time-local" type="time" value="20240201 10:00:00.000"/>\r\n'
            f'<prop id="image-name" type="string" value="{wave}"/>\r\n'
            f'<prop id="spatial-calibration-x" type="float" value="{pixel_size_um}"/>\r\n'
            f'<prop id="spatial-calibration-y" type="float" value="{pixel_size_um}"/>\r\n'
            '<prop id="spatial-calibration-units" type="string" value="um"/>\r\n'
            '<prop id="stage-position-x" type="float" value="1000"/>\r\n</PlaneInfo>\r\n</MetaData>')


def imagexpress_plate(root: Path, *, size: int = 8, calibrated: bool = False) -> Path:
    """An ImageXpress plate: ``Screen.HTD`` (2 wavelengths, 2 sites) and ``TimePoint_1/Screen_A01_s1_w1.tif``.

    ``calibrated``: the TIFFs keep MetaXpress's description with a 0.65 µm calibration; else they are
    plain TIFFs (a copy without its metadata), and the pixel size is unknown."""
    waves = ["DAPI", "FITC"]
    lines = ['"HTSInfoFile", Version 1.0', '"Description", "Screen"', '"TimePoints", 1', '"ZSeries", FALSE',
             '"ZSteps", 1', '"XWells", 12', '"YWells", 8']
    lines += [f'"WellsSelection{r}", ' + ", ".join("TRUE" if (r, c) in {(1, 1), (1, 2)} else "FALSE"
                                                   for c in range(1, 13)) for r in range(1, 9)]
    lines += ['"Sites", TRUE', '"XSites", 2', '"YSites", 1', '"SiteSelection1", TRUE, TRUE', '"Waves", TRUE',
              f'"NWavelengths", {len(waves)}']
    for i, wave in enumerate(waves, 1):
        lines += [f'"WaveName{i}", "{wave}"', f'"WaveCollect{i}", 1']
    lines += ['"UniquePlateIdentifier", "Screen"', '"EndFile"']
    root.mkdir(parents=True)
    (root / "Screen.HTD").write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    for well in ("A01", "A02"):
        for site in (1, 2):
            for w, wave in enumerate(waves, 1):
                _image(root / "TimePoint_1" / f"Screen_{well}_s{site}_w{w}.tif", site + w, size,
                       _metaseries(0.65, wave) if calibrated else None)
    return root
