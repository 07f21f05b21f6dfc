"""DICOM radiographs to the monitor's 8 bits, and the tags that identify them (pydicom; nothing parsed by hand).

What a radiologist's viewer does, in the standard's order (PS3.3 C.11, PS3.4 N.2.1.1): the stored values go
through the modality rescale (or Modality LUT); then the file's VOI LUT Sequence, else its Window
Center/Width (with its VOI LUT Function), else the image's own range; MONOCHROME1 (0 is white, as many CR
and DX files are) is inverted; then the tone map to the monitor's levels (rig/tone.py). A session's window
replaces the file's VOI. Compressed transfer syntaxes decode through pydicom's plugins (pylibjpeg-libjpeg
for JPEG and JPEG-LS, pydicom itself for RLE Lossless).

A file that cannot be shown raises ImageError, one line naming the file, why, and what to do: its item
fails, the run goes on. Patient names are never read.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import Dataset, dcmread
from pydicom import config as pydicom_config
from pydicom.errors import InvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_modality_lut, apply_voi, apply_windowing
from pydicom.uid import UID

from rig.errors import ImageError
from rig.tone import Window, linear_window, own_range, to_display

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
_DEFER = 64 * 1024  # elements larger than this (the pixel data) are read only when used
_PREAMBLE = 128  # a DICOM file (PS3.10) is a 128-byte preamble, then "DICM"
_IDENTITY_TAGS = ["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "AccessionNumber",
                  "Modality", "ViewPosition"]
_MAX_TABLE = 2 ** 16  # stored values looked up through a table of at most this many entries
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


# Odd tag values are ours to judge (a bad UID gets a safe name below): no raw warnings on the console.
pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")  # PS3.5 9.1: digits and dots, at most 64 characters


def _safe_uid(uid: str) -> str:
    """A UID as a folder name: itself when it is a UID, else `uid-<hash>` (a damaged or hostile tag such as
    "../../x" must never name a path outside the run or export folder)."""
    if len(uid) <= 64 and _UID.fullmatch(uid):
        return uid
    return "uid-" + hashlib.sha256(uid.encode()).hexdigest()[:16]


def is_dicom(path: Path | str) -> bool:
    """True for a DICOM file by its content (the "DICM" marker after the preamble), whatever its name."""
    try:
        with open(path, "rb") as f:
            f.seek(_PREAMBLE)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def read_dicom(path: Path | str, window: Window | None, max_pixels: int) -> np.ndarray:
    """The radiograph as the monitor's 8-bit greyscale (H, W); `window` (center, width, in the modality's
    units, e.g. after the rescale) replaces the file's own VOI; more than `max_pixels` (the session's
    max_image_pixels) is refused before decoding. ImageError if it cannot be shown."""
    path = Path(path)
    ds = _open(path)
    _check_displayable(ds, path, max_pixels)
    stored = _decode(ds, path)
    lo, hi = int(stored.min()), int(stored.max())
    if hi - lo >= _MAX_TABLE:  # 32-bit values spanning more than a table: every pixel through the steps
        return _display(stored, stored, ds, window, path)
    # Every step is per value, so run them once per stored value in the image's range and look pixels up:
    # the same result as per pixel, without a dozen float64 passes over a 3000 x 2500 film.
    index = np.subtract(stored, lo, dtype=np.int32)
    occurs = np.bincount(index.ravel(), minlength=hi - lo + 1) > 0
    domain = np.arange(lo, hi + 1, dtype=np.int64).astype(stored.dtype)
    table = _display(domain, domain[occurs], ds, window, path)
    levels: np.ndarray = table[index]
    return levels


@dataclass(frozen=True)
class DicomIdentity:
    """The identifiers a user joins labels on (never the patient's name), read without the pixel data."""

    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    accession_number: str
    modality: str
    view_position: str

    @property
    def study_id(self) -> str:
        """`<patient>/<StudyInstanceUID>`, safe as folder names: the run store files photos under it. A
        PatientID that is not a plain token (spaces, slashes, over 64 characters) becomes `pid-<hash>`."""
        pid = self.patient_id.strip()
        if not pid:
            patient = "no-patient-id"
        elif _SAFE_ID.fullmatch(pid) and pid not in (".", ".."):
            patient = pid
        else:
            patient = "pid-" + hashlib.sha256(pid.encode()).hexdigest()[:16]
        return f"{patient}/{_safe_uid(self.study_instance_uid)}"

    @property
    def image_id(self) -> str:
        """`<study_id>/<SOPInstanceUID>.dcm`: unique per image and free of whatever the file was named."""
        return f"{self.study_id}/{_safe_uid(self.sop_instance_uid)}.dcm"

    def columns(self) -> dict[str, str]:
        """The identifiers under their DICOM keywords, as export columns."""
        return {"PatientID": self.patient_id, "StudyInstanceUID": self.study_instance_uid,
                "SeriesInstanceUID": self.series_instance_uid, "SOPInstanceUID": self.sop_instance_uid,
                "AccessionNumber": self.accession_number}


def dicom_size(path: Path | str) -> tuple[int, int]:
    """Columns x Rows from the tags alone (the pixel cap is checked before anything is decoded)."""
    ds = _open(Path(path), ["Rows", "Columns"])
    size = int(ds.get("Columns") or 0), int(ds.get("Rows") or 0)
    if not all(size):  # no image: let the full read say why (not an image, no pixel data, ...)
        read_dicom(path, None, 2 ** 62)
    return size


def dicom_identity(path: Path | str) -> DicomIdentity:
    """The file's identifiers from its tags (the pixel data is not read); ImageError if it has none."""
    path = Path(path)
    ds = _open(path, _IDENTITY_TAGS)
    values = {k: str(ds.get(k, "") or "").strip() for k in _IDENTITY_TAGS}
    for required in ("StudyInstanceUID", "SOPInstanceUID"):
        if not values[required]:
            raise ImageError(f"DICOM cannot be identified: {path} has no {required} (every DICOM image has one); "
                             "fix the file or remove it from the manifest")
    return DicomIdentity(values["PatientID"], values["StudyInstanceUID"], values["SeriesInstanceUID"],
                         values["SOPInstanceUID"], values["AccessionNumber"], values["Modality"],
                         values["ViewPosition"])


# ---------------------------------------------------------------- reading and checking


def _open(path: Path, tags: list[str] | None = None) -> Dataset:
    """The dataset with its pixel data left on disk until used (or only `tags`, without pixel data)."""
    try:
        if tags is not None:
            return dcmread(path, stop_before_pixels=True, specific_tags=list(tags))
        return dcmread(path, defer_size=_DEFER)
    except InvalidDicomError:
        raise ImageError(f"DICOM cannot be read: {path} is not a DICOM file (no 'DICM' after the 128-byte "
                         "preamble); remove it from the manifest or export it again as DICOM Part 10") from None
    except FileNotFoundError:
        raise ImageError(f"image not found: {path}") from None
    except Exception as e:  # EOFError, struct.error, OSError, ...: a damaged or cut-short header
        raise ImageError(f"DICOM cannot be read: {path} ({_detail(e)}); the file may be cut short or damaged: "
                         "copy it again from the source") from None


def _check_displayable(ds: Dataset, path: Path, max_pixels: int) -> None:
    """Refuse, before decoding anything, what is no single greyscale image or has no decoder here."""
    sop = UID(str(ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID") or ""))
    if sop and sop.name != str(sop) and "Image Storage" not in sop.name:  # a known class that is no image
        raise ImageError(f"DICOM is not an image: {path} is a {sop.name} ({sop}); remove it from the manifest")
    if "PixelData" not in ds:
        size = path.stat().st_size
        why = ("it has image tags but ends before any pixel data: cut short, or exported without pixels; copy it "
               "again from the source") if "Rows" in ds else "not an image; remove it from the manifest"
        raise ImageError(f"DICOM has no pixel data: {path} ({size:,} bytes; {why})")
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise ImageError(f"DICOM is a multi-frame image: {path} has {frames} frames; export the one to photograph "
                         "as a single-frame file")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageError(f"DICOM is not greyscale: {path} is {photometric or 'without PhotometricInterpretation'}; "
                         "only MONOCHROME1/MONOCHROME2 radiographs are shown: convert it")
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows * columns > max_pixels:
        raise ImageError(f"image cannot be decoded: {path} is {columns}x{rows} ({rows * columns:,} pixels), over "
                         f"max_image_pixels {max_pixels:,}; raise 'max_image_pixels' in the session if it is real")
    _check_decoder(ds, path)


def _check_decoder(ds: Dataset, path: Path) -> None:
    """Name the plugin to install when this machine has no decoder for the file's transfer syntax."""
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID") or ""))
    if not syntax:
        raise ImageError(f"DICOM cannot be decoded: {path} has no TransferSyntaxUID in its file meta "
                         "information; export it again as DICOM Part 10")
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:  # pydicom has no decoder for this transfer syntax at all
        raise ImageError(f"DICOM cannot be decoded: {path} uses {syntax.name} ({syntax}), which no pydicom "
                         "decoder reads; convert it to an uncompressed transfer syntax") from None
    if not decoder.is_available:
        options = [_pip_install(m) for m in decoder.missing_dependencies]
        raise ImageError(f"DICOM cannot be decoded: {path} uses {syntax.name} ({syntax}) and no decoder for it is "
                         f"installed; {' or '.join(options)}")


def _pip_install(missing: str) -> str:
    """pydicom's "pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-openjpeg>=2.0" as a pip command."""
    requirements = missing.split(" - requires ", 1)[-1].replace(" and ", ", ").split(", ")
    return "pip install " + " ".join(f"'{r.strip()}'" for r in requirements if r.strip() != "numpy")


def _decode(ds: Dataset, path: Path) -> np.ndarray:
    try:
        pixels: np.ndarray = ds.pixel_array
    except Exception as e:  # a cut-short file, a broken codestream: this image fails, never the run
        detail = _detail(e)
        if "less than expected" in detail:
            raise ImageError(f"DICOM is cut short: {path} ({detail.split(' - ')[0]}); copy it again from the "
                             "source") from None
        raise ImageError(f"DICOM cannot be decoded: {path} ({detail})") from None
    return pixels


def _display(stored: np.ndarray, occurring: np.ndarray, ds: Dataset, window: Window | None, path: Path) -> np.ndarray:
    """Stored values to monitor levels: modality rescale, VOI, MONOCHROME1 inversion, tone map. `occurring`
    are the stored values the image holds (its own range, when nothing else sets the window)."""
    values = apply_modality_lut(stored, ds)
    unit = _values_of_interest(values, ds, window, path, lambda: own_range(apply_modality_lut(occurring, ds)))
    return to_display(unit, invert=ds.PhotometricInterpretation == "MONOCHROME1")


def _values_of_interest(values: np.ndarray, ds: Dataset, window: Window | None, path: Path,
                        image_range: Callable[[], Window]) -> np.ndarray:
    """The VOI stage onto 0..1: the session's window, else the file's VOI LUT, its window, the image's range."""
    if window is not None:
        return linear_window(values, window)
    try:
        if ds.get("VOILUTSequence") and "LUTData" in ds.VOILUTSequence[0]:
            descriptor = ds.VOILUTSequence[0].LUTDescriptor  # entries, first value mapped, bits per entry
            entries, first, bits = int(descriptor[0]) or 2 ** 16, int(descriptor[1]), int(descriptor[2])
            lut_in = np.clip(np.rint(values), first, first + entries - 1).astype(np.int64)  # LUT inputs are whole
            lut_out: np.ndarray = np.asarray(apply_voi(lut_in, ds), np.float64)
            unit: np.ndarray = lut_out / (2 ** bits - 1)
            return unit
        if "WindowCenter" in ds and "WindowWidth" in ds:
            y: np.ndarray = np.asarray(apply_windowing(values, ds), np.float64)
            y_lo, y_hi = apply_windowing(np.array([-np.inf, np.inf]), ds)  # the ends of its output range
            unit = (y - y_lo) / (y_hi - y_lo)
            return unit
    except Exception as e:  # a LUT depth or window the standard does not allow
        raise ImageError(f"DICOM cannot be windowed: {path} ({_detail(e)}); set the session's window "
                         "to override the file's") from None
    return linear_window(values, image_range())


def _detail(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
