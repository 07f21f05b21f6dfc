"""A small DICOM demo set from the phantoms (rig/demo_data.py), laid out and listed like CheXpert.

The rig's DICOM path (rig/dicom.py) needs hospital-like files without a hospital: 12-bit DX radiographs,
MONOCHROME1 and MONOCHROME2, with a window or a VOI LUT Sequence or neither, uncompressed and RLE Lossless
(the compressed syntax pydicom writes by itself). `write_dicom` is the one writer, for the demo and the tests.

Run: `python -m rig.demo_dicom OUT_DIR [--count N] [--seed S]`.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, RLELossless, generate_uid

from rig.demo_data import CHEXPERT_COLUMNS, phantom
from rig.tone import Window

__all__ = ["DEMO_VARIANTS", "DemoVariant", "VoiLut", "main", "phantom_12bit", "write_dicom", "write_dicom_demo"]

DATASET_DIR = "CheXpert-v1.0-dicom"
BITS_STORED = 12


@dataclass(frozen=True)
class VoiLut:
    """A VOI LUT Sequence item: `data[i]` is the output for the input value `first_mapped + i`."""

    data: np.ndarray  # unsigned integers below 2 ** bits
    first_mapped: int = 0
    bits: int = 12


def phantom_12bit(width: int, height: int, seed: int, lateral: bool = False) -> np.ndarray:
    """A phantom as 12-bit stored values (uint16, 0..4095), bright where dense, as MONOCHROME2 stores it."""
    rng = np.random.default_rng(seed)
    eight = phantom(width, height, seed, lateral).astype(np.uint16)
    return eight * 16 + rng.integers(0, 16, eight.shape, dtype=np.uint16)  # fill the low bits, not a staircase


def write_dicom(path: Path, stored: np.ndarray, *, photometric: str = "MONOCHROME2", window: Window | None = None,
                voi_lut: VoiLut | None = None, rescale: tuple[float, float] | None = None,
                syntax: UID = ExplicitVRLittleEndian, patient_id: str = "DEMO00001", study_uid: str | None = None,
                series_uid: str | None = None, sop_uid: str | None = None,
                sop_class: UID = DigitalXRayImageStorageForPresentation, bits_stored: int = BITS_STORED) -> Path:
    """Write one greyscale DICOM (Part 10) of `stored` (uint16, or int16 for signed; H x W or frames x H x W).

    `rescale` is (slope, intercept); `window` is (center, width) in the rescaled values; `syntax` is an
    uncompressed transfer syntax, RLE Lossless, or one whose encoder plugin is installed (pyjpegls for
    JPEG-LS). Missing UIDs are made up.
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = UID(sop_uid or generate_uid())
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = "Phantom^Demo"  # a name is there, as in real files: the rig must never put it in a file name
    ds.Modality = "DX"
    ds.set_pixel_data(np.ascontiguousarray(stored), photometric, bits_stored, generate_instance_uid=False)
    ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
        ds.RescaleType = "US"  # unspecified units
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut is not None:
        item = Dataset()
        item.LUTDescriptor = [len(voi_lut.data) % 2 ** 16, voi_lut.first_mapped, voi_lut.bits]
        item.add_new("LUTData", "OW", np.asarray(voi_lut.data, "<u2").tobytes())  # OW: a LUT too long for US
        item.LUTExplanation = "demo curve"
        ds.VOILUTSequence = DicomSequence([item])
    if syntax.is_compressed:
        ds.compress(syntax, generate_instance_uid=False)  # RLE: pydicom itself; others: an encoder plugin
    else:
        meta.TransferSyntaxUID = syntax
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def demo_voi_lut(bits_stored: int = BITS_STORED) -> VoiLut:
    """An S-shaped 12-bit curve over the whole stored range, like a CR/DX "for presentation" LUT."""
    x = np.arange(2 ** bits_stored, dtype=np.float64) / (2 ** bits_stored - 1)
    curve = 1.0 / (1.0 + np.exp(-8.0 * (x - 0.5)))
    curve = (curve - curve[0]) / (curve[-1] - curve[0])
    return VoiLut(np.rint(curve * (2 ** 12 - 1)).astype(np.uint16), 0, 12)


@dataclass(frozen=True)
class DemoVariant:
    """How one demo file is stored; the set covers what PACS exports of chest films look like."""

    name: str
    photometric: str
    window: Window | None = None
    voi_lut: bool = False
    rescale: tuple[float, float] | None = None
    syntax: UID = ExplicitVRLittleEndian


DEMO_VARIANTS: tuple[DemoVariant, ...] = (
    DemoVariant("mono2-window", "MONOCHROME2", window=(2047.0, 3600.0)),
    DemoVariant("mono1-window", "MONOCHROME1", window=(2047.0, 3600.0)),
    DemoVariant("mono2-voilut", "MONOCHROME2", window=(2047.0, 4096.0), voi_lut=True),
    DemoVariant("mono1-rle", "MONOCHROME1", window=(2100.0, 3000.0), syntax=RLELossless),
    DemoVariant("mono2-rescale-rle", "MONOCHROME2", window=(1000.0, 3000.0), rescale=(1.0, -1024.0),
                syntax=RLELossless),
    DemoVariant("mono2-no-window", "MONOCHROME2"),
)


def write_dicom_demo(out_dir: Path, count: int = len(DEMO_VARIANTS), seed: int = 0) -> Path:
    """Write `count` phantom DICOMs (cycling through DEMO_VARIANTS) in CheXpert layout plus `train.csv`
    (CheXpert's columns); return the CSV's path. Same seed, same files (UIDs included)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, str]] = []
    for i in range(count):
        variant = DEMO_VARIANTS[i % len(DEMO_VARIANTS)]
        patient, lateral = i // 2 + 1, i % 2 == 1
        view = "view2_lateral" if lateral else "view1_frontal"
        rel = f"{DATASET_DIR}/train/patient{patient:05d}/study1/{view}.dcm"
        width = int(rng.integers(320, 513))
        height = int(round(width * rng.uniform(0.9, 1.25)))
        stored = phantom_12bit(width, height, seed * 1000 + i, lateral)
        if variant.photometric == "MONOCHROME1":
            stored = (2 ** BITS_STORED - 1) - stored  # stored dark where dense: shown the same after inversion
        uid = _uids(seed, patient)
        write_dicom(out_dir / rel, stored, photometric=variant.photometric, window=variant.window,
                    voi_lut=demo_voi_lut() if variant.voi_lut else None, rescale=variant.rescale,
                    syntax=variant.syntax, patient_id=f"DEMO{patient:05d}", study_uid=uid[0], series_uid=uid[1],
                    sop_uid=generate_uid(entropy_srcs=[str(seed), rel]))
        rows.append(_row(rel, lateral, rng))
    manifest = out_dir / "train.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(CHEXPERT_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def _uids(seed: int, patient: int) -> tuple[str, str]:
    """The study and series UIDs of a demo patient: the same on every run with the same seed."""
    return (generate_uid(entropy_srcs=[str(seed), str(patient), "study"]),
            generate_uid(entropy_srcs=[str(seed), str(patient), "series"]))


def _row(rel: str, lateral: bool, rng: np.random.Generator) -> dict[str, str]:
    """A CheXpert row with sparse labels (blank, 1.0, 0.0 or -1.0)."""
    row = {name: "" for name in CHEXPERT_COLUMNS}
    row.update({"Path": rel, "Sex": str(rng.choice(["Male", "Female"])), "Age": str(int(rng.integers(18, 91))),
                "Frontal/Lateral": "Lateral" if lateral else "Frontal",
                "AP/PA": "" if lateral else str(rng.choice(["AP", "PA"]))})
    for name in CHEXPERT_COLUMNS[5:]:
        row[name] = str(rng.choice(["", "", "", "1.0", "0.0", "-1.0"]))
    return row


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: write the DICOM demo set and say what was written."""
    parser = argparse.ArgumentParser(prog="python -m rig.demo_dicom",
                                     description="Write a CheXpert-style set of phantom DICOM files.")
    parser.add_argument("out_dir", type=Path, help="folder to write into (created if missing)")
    parser.add_argument("--count", type=int, default=len(DEMO_VARIANTS),
                        help=f"number of files (default {len(DEMO_VARIANTS)}: one of each kind)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    manifest = write_dicom_demo(args.out_dir, args.count, args.seed)
    print(f"wrote {args.count} phantom DICOM files and {manifest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
