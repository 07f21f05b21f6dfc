"""DICOM and 16-bit images to the monitor's 8 bits (rig/dicom.py, rig/tone.py), checked against the standard's
formulas written out here on the known stored values, and the bad files each failing with their reason."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.pixels import pixel_array
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    UID,
    BasicTextSRStorage,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
)

from rig.demo_dicom import VoiLut, phantom_12bit, write_dicom
from rig.demo_dicom import main as demo_main
from rig.dicom import dicom_identity, is_dicom, read_dicom
from rig.errors import ImageError, RigError
from rig.images import DEFAULT_MAX_PIXELS, decode_image
from rig.manifest import Manifest

H, W = 80, 96
CAP = DEFAULT_MAX_PIXELS  # the session's max_image_pixels default


@pytest.fixture(scope="module")
def stored() -> np.ndarray:
    """12-bit stored values of a small phantom (0..4095)."""
    return phantom_12bit(W, H, seed=3)


def lut_curve() -> VoiLut:
    """A gamma curve over 3000 inputs from 500: values below map to its first entry, above to its last."""
    x = np.arange(3000) / 2999
    return VoiLut(np.rint(4095 * x ** 0.6).astype(np.uint16), first_mapped=500, bits=12)


# ---------------------------------------------------------------- the standard, written out independently


def dicom_linear(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR onto 0..1, branch by branch as the standard states it."""
    bottom = center - 0.5 - (width - 1) / 2
    top = center - 0.5 + (width - 1) / 2
    middle = (x - (center - 0.5)) / (width - 1) + 0.5
    return np.where(x <= bottom, 0.0, np.where(x > top, 1.0, middle))


def on_monitor(unit: np.ndarray, monochrome1: bool) -> np.ndarray:
    """Nearest of the 256 levels; MONOCHROME1 shows its minimum white. Where a value lies half way between two
    levels (either is nearest) the level is 255 + 1, which `same_picture` accepts as either neighbour."""
    levels = (1.0 - unit if monochrome1 else unit) * 255
    tie = np.abs(levels - np.floor(levels) - 0.5) < 1e-9
    return np.where(tie, 256, np.rint(levels)).astype(np.int64)


def same_picture(shown: np.ndarray, want: np.ndarray) -> bool:
    """The shown levels equal the expected ones; at a tie, one of the two nearest levels."""
    tie = want == 256
    assert np.count_nonzero(tie) < want.size // 50, "too many ties for the check to mean much"
    return bool(np.array_equal(shown[~tie], want[~tie]))


CASES = {  # name: (photometric, window, voi lut, rescale (slope, intercept), transfer syntax)
    "mono2-window": ("MONOCHROME2", (2047.0, 3600.0), None, None, ExplicitVRLittleEndian),
    "mono1-window": ("MONOCHROME1", (1900.0, 2500.0), None, None, ExplicitVRLittleEndian),
    "mono2-voilut-preferred-to-window": ("MONOCHROME2", (100.0, 50.0), lut_curve(), None, ExplicitVRLittleEndian),
    "mono1-voilut-rle": ("MONOCHROME1", None, lut_curve(), None, RLELossless),
    "mono2-rescale-window-rle": ("MONOCHROME2", (1500.0, 5000.0), None, (2.0, -1000.0), RLELossless),
    "mono1-own-range-implicit": ("MONOCHROME1", None, None, None, ImplicitVRLittleEndian),
    "mono1-window-jpegls": ("MONOCHROME1", (2047.0, 3600.0), None, None, JPEGLSLossless),
}


def expected(stored: np.ndarray, photometric: str, window: tuple[float, float] | None, lut: VoiLut | None,
             rescale: tuple[float, float] | None) -> np.ndarray:
    """What the monitor must show for these stored values and tags, by the standard's steps."""
    slope, intercept = rescale or (1.0, 0.0)
    modality = stored.astype(np.float64) * slope + intercept
    if lut is not None:
        index = np.clip(modality.astype(np.int64) - lut.first_mapped, 0, len(lut.data) - 1)
        unit = lut.data[index] / 4095.0
    elif window is not None:
        unit = dicom_linear(modality, *window)
    else:  # the image's own range: its minimum black, its maximum white
        unit = (modality - modality.min()) / (modality.max() - modality.min())
    return on_monitor(unit, photometric == "MONOCHROME1")


@pytest.mark.parametrize("case", CASES)
def test_dicom_display_matches_the_standards_windowing(tmp_path: Path, stored: np.ndarray, case: str) -> None:
    photometric, window, lut, rescale, syntax = CASES[case]
    path = write_dicom(tmp_path / "x.dcm", stored, photometric=photometric, window=window, voi_lut=lut,
                       rescale=rescale, syntax=syntax)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    shown = read_dicom(path, None, CAP)
    assert shown.dtype == np.uint8 and shown.shape == (H, W)
    want = expected(stored, photometric, window, lut, rescale)
    assert same_picture(shown, want), f"{np.count_nonzero(shown != want)} pixels differ"
    assert int(shown.max()) - int(shown.min()) > 100  # a real tonal range, not a flat grey that equals itself


def test_signed_stored_values(tmp_path: Path, stored: np.ndarray) -> None:
    signed = stored.astype(np.int16) - 2048  # PixelRepresentation 1: -2048 .. 2047
    path = write_dicom(tmp_path / "x.dcm", signed, window=(-100.0, 3000.0), rescale=(0.5, 10.0), syntax=RLELossless)
    assert pydicom.dcmread(path).PixelRepresentation == 1
    want = expected(signed, "MONOCHROME2", (-100.0, 3000.0), None, (0.5, 10.0))
    assert same_picture(read_dicom(path, None, CAP), want)


def test_32bit_values_spanning_more_than_a_table(tmp_path: Path, stored: np.ndarray) -> None:
    wide = stored.astype(np.uint32) * 50 + 70000  # 70000 .. 274750: a span no 16-bit table covers
    path = write_dicom(tmp_path / "x.dcm", stored, photometric="MONOCHROME1", window=(170000.0, 150000.0))
    ds = pydicom.dcmread(path)  # pydicom's set_pixel_data stops at 16 bits: the 32-bit tags by hand
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
    ds.PixelData = wide.astype("<u4").tobytes()
    ds.save_as(path)
    assert pydicom.dcmread(path).pixel_array.dtype == np.uint32
    assert same_picture(read_dicom(path, None, CAP), expected(wide, "MONOCHROME1", (170000.0, 150000.0), None, None))


def test_jpeg_family_decodes_through_pylibjpeg(tmp_path: Path, stored: np.ndarray) -> None:
    """pylibjpeg-libjpeg is what users have for JPEG, JPEG Lossless and JPEG-LS files (pyjpegls only encodes
    the test's file), so the file must decode through it, not only through whichever plugin pydicom tries first."""
    path = write_dicom(tmp_path / "x.dcm", stored, syntax=JPEGLSLossless)
    assert np.array_equal(pixel_array(path, decoding_plugin="pylibjpeg"), stored)


def test_session_window_replaces_the_files_voi_lut(tmp_path: Path, stored: np.ndarray) -> None:
    path = write_dicom(tmp_path / "x.dcm", stored, photometric="MONOCHROME1", window=(100.0, 50.0),
                       voi_lut=lut_curve(), rescale=(1.0, -1024.0))
    shown = read_dicom(path, (500.0, 2000.0), CAP)
    assert same_picture(shown, on_monitor(dicom_linear(stored - 1024.0, 500.0, 2000.0), monochrome1=True))


def test_a_windows_ends_are_black_and_white(tmp_path: Path) -> None:
    """LINEAR maps c - 0.5 - (w-1)/2 to the bottom and c - 0.5 + (w-1)/2 to the top: 0 and 255, exactly."""
    ramp = np.tile(np.arange(1000, 1101, dtype=np.uint16), (4, 1))
    path = write_dicom(tmp_path / "ramp.dcm", ramp, window=(1050.5, 101.0))  # bottom 1000, top 1100
    shown = read_dicom(path, None, CAP)
    assert shown[0, 0] == 0 and shown[0, -1] == 255 and shown[0, 50] in (127, 128)
    assert np.all(np.diff(shown[0].astype(int)) >= 0)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_png_and_tiff_get_the_same_treatment(tmp_path: Path, stored: np.ndarray, suffix: str) -> None:
    wide = (stored * 16 + 7).astype(np.uint16)  # 16-bit values
    path = tmp_path / f"x{suffix}"
    assert cv2.imwrite(str(path), wide)
    own = decode_image(path, "gray", CAP, window=None)
    lo, hi = float(wide.min()), float(wide.max())
    assert same_picture(own, on_monitor((wide - lo) / (hi - lo), monochrome1=False))
    windowed = decode_image(path, "gray", CAP, window=(30000.0, 40001.0))
    assert same_picture(windowed, on_monitor(dicom_linear(wide.astype(np.float64), 30000.0, 40001.0), False))


def test_8bit_png_is_shown_as_stored(tmp_path: Path, stored: np.ndarray) -> None:
    eight = (stored // 16).astype(np.uint8)
    path = tmp_path / "x.png"
    assert cv2.imwrite(str(path), eight)
    assert np.array_equal(decode_image(path, "gray", CAP, window=(10.0, 20.0)), eight)


# ---------------------------------------------------------------- bad input: one line, the file, what to do


def refused(path: Path, match: str, max_pixels: int = CAP) -> str:
    with pytest.raises(ImageError, match=match) as e:
        read_dicom(path, None, max_pixels)
    message = str(e.value)
    assert isinstance(e.value, ValueError) and isinstance(e.value, RigError)  # the engine fails the item
    assert str(path) in message and "\n" not in message
    return message


def test_dicom_without_pixel_data_fails_with_its_reason(tmp_path: Path, stored: np.ndarray) -> None:
    path = write_dicom(tmp_path / "x.dcm", stored)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    refused(path, "has no pixel data")


def test_truncated_dicom_fails_with_its_reason(tmp_path: Path, stored: np.ndarray) -> None:
    whole = write_dicom(tmp_path / "whole.dcm", stored).read_bytes()
    in_pixels, in_header = tmp_path / "in_pixels.dcm", tmp_path / "in_header.dcm"
    in_pixels.write_bytes(whole[:-2000])
    in_header.write_bytes(whole[:700])  # past Rows and Columns, before the pixel data
    assert "copy it again" in refused(in_pixels, "cut short")
    assert "copy it again" in refused(in_header, "no pixel data.*cut short")


def test_unsupported_transfer_syntax_names_the_plugin(tmp_path: Path, stored: np.ndarray) -> None:
    assert not get_decoder(HTJ2KLossless).is_available, "this test needs a syntax with no decoder installed"
    path = write_dicom(tmp_path / "x.dcm", stored)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = HTJ2KLossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(64)])  # never decoded: refused before that
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    message = refused(path, "High-Throughput JPEG 2000")
    assert "pip install" in message and "pylibjpeg-openjpeg" in message


def test_transfer_syntax_without_any_decoder(tmp_path: Path, stored: np.ndarray) -> None:
    path = write_dicom(tmp_path / "x.dcm", stored)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2 video
    ds.PixelData = encapsulate([bytes(64)])
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    refused(path, "MPEG2.*which no pydicom decoder reads")


def test_non_image_sop_class_fails_with_its_reason(tmp_path: Path, stored: np.ndarray) -> None:
    path = write_dicom(tmp_path / "report.dcm", stored, sop_class=BasicTextSRStorage)
    refused(path, "not an image.*Basic Text SR")


def test_multi_frame_image_fails_with_its_reason(tmp_path: Path, stored: np.ndarray) -> None:
    path = write_dicom(tmp_path / "cine.dcm", np.stack([stored, stored]))
    refused(path, "multi-frame.*2 frames.*single-frame")


def test_not_a_dicom_file_and_oversized_image(tmp_path: Path, stored: np.ndarray) -> None:
    text = tmp_path / "notes.dcm"
    text.write_text("not a radiograph\n" * 20)
    assert not is_dicom(text)
    refused(text, "not a DICOM file")
    path = write_dicom(tmp_path / "x.dcm", stored)
    assert is_dicom(path)
    refused(path, "over max_image_pixels 1,000", max_pixels=1000)


# ---------------------------------------------------------------- identity and the demo set


def test_identity_comes_from_tags_and_never_carries_the_name(tmp_path: Path, stored: np.ndarray) -> None:
    path = write_dicom(tmp_path / "x.dcm", stored, patient_id="MRN0042", study_uid="1.2.3.4", series_uid="1.2.3.4.5",
                       sop_uid="1.2.3.4.5.6")
    ident = dicom_identity(path)
    assert ident.study_id == "MRN0042/1.2.3.4" and ident.image_id == "MRN0042/1.2.3.4/1.2.3.4.5.6.dcm"
    assert ident.columns() == {"PatientID": "MRN0042", "StudyInstanceUID": "1.2.3.4", "SeriesInstanceUID": "1.2.3.4.5",
                               "SOPInstanceUID": "1.2.3.4.5.6", "AccessionNumber": ""}
    assert "Phantom" not in repr(ident)  # write_dicom sets PatientName "Phantom^Demo"
    rle = write_dicom(tmp_path / "rle.dcm", stored, sop_uid="1.2.3.4.5.7", syntax=RLELossless)
    assert dicom_identity(rle).sop_instance_uid == "1.2.3.4.5.7"  # compressing keeps the image's identity
    odd = dicom_identity(write_dicom(tmp_path / "y.dcm", stored, patient_id="DOE^JOHN 1/2", study_uid="1.2.3"))
    assert odd.study_id.startswith("pid-") and "/" not in odd.study_id.removesuffix("/1.2.3")
    hostile = dicom_identity(write_dicom(tmp_path / "z.dcm", stored, study_uid="../../../../tmp/evil",
                                         sop_uid="../../x"))  # not UIDs: they must name no path outside the run
    assert hostile.study_id.split("/")[1].startswith("uid-") and ".." not in hostile.image_id
    assert hostile.columns()["StudyInstanceUID"] == "../../../../tmp/evil"  # the export keeps the tag as it is
    ds = pydicom.dcmread(path)
    del ds.StudyInstanceUID
    ds.save_as(path)
    with pytest.raises(ImageError, match="has no StudyInstanceUID"):
        dicom_identity(path)


def test_demo_dicom_set_is_a_chexpert_manifest_of_every_kind(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert demo_main([str(tmp_path)]) == 0
    csv_path = tmp_path / "train.csv"
    assert str(csv_path) in capsys.readouterr().out
    with csv_path.open(newline="") as f:
        paths = [row["Path"] for row in csv.DictReader(f)]
    rows = list(Manifest(csv_path, tmp_path, None).rows())
    assert [r.source for r in rows] == paths and len(paths) == 6
    assert rows[0].study_id == "patient00001/study1"
    kinds = set()
    for row in rows:
        ds = pydicom.dcmread(row.file)
        kinds |= {str(ds.PhotometricInterpretation), ds.file_meta.TransferSyntaxUID.name}
        kinds |= {"VOI LUT"} if "VOILUTSequence" in ds else set()
        shown = read_dicom(row.file, None, CAP)
        assert shown.min() < 40 and shown.max() > 215, row.source
    assert {"MONOCHROME1", "MONOCHROME2", "VOI LUT", "RLE Lossless", "Explicit VR Little Endian"} <= kinds
