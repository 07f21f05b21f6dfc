"""Demo data must look like CheXpert to the rig: layout, manifest and x-ray-like images."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from rig.demo_data import make_demo_data, write_phantom

REPO = Path(__file__).resolve().parents[1]
HEADER = [
    "Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
    "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia",
    "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
]
LABEL_VALUES = {"1.0", "0.0", "-1.0", ""}


def read_manifest(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a manifest, read the way a user's pandas/csv code would."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def grey(path: Path) -> np.ndarray:
    """Decode an image as stored (no conversion), so colour images would be caught."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, f"{path} does not decode"
    return img


def all_files(root: Path) -> dict[str, bytes]:
    """Every file under root by relative path, for byte-level comparisons."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, str]]]:
    """One default demo data set shared by the read-only tests."""
    out = tmp_path_factory.mktemp("demo")
    manifest = make_demo_data(out)
    assert manifest == out / "train.csv"
    header, rows = read_manifest(manifest)
    assert header == HEADER
    return out, rows


def test_manifest_has_chexpert_header_and_one_row_per_image(demo) -> None:
    out, rows = demo
    images = sorted(str(p.relative_to(out)) for p in out.rglob("*.jpg"))
    assert len(rows) == 14
    assert sorted(r["Path"] for r in rows) == images


def test_layout_mirrors_chexpert(demo) -> None:
    out, rows = demo
    studies: dict[str, set[str]] = {}
    for r in rows:
        parts = Path(r["Path"]).parts
        assert parts[:2] == ("CheXpert-v1.0-small", "train")
        assert parts[2].startswith("patient") and parts[3].startswith("study")
        assert parts[4] in {"view1_frontal.jpg", "view2_lateral.jpg"}
        studies.setdefault(parts[2], set()).add(parts[3])
    assert len(studies) >= 3, "several patients"
    assert any(len(s) == 2 for s in studies.values()), "some patient with two studies"
    assert any(r["Path"].endswith("view2_lateral.jpg") for r in rows)


def test_manifest_values_are_chexpert_like(demo) -> None:
    _, rows = demo
    sexes_by_patient: dict[str, set[str]] = {}
    for r in rows:
        lateral = r["Path"].endswith("lateral.jpg")
        assert r["Frontal/Lateral"] == ("Lateral" if lateral else "Frontal")
        assert r["AP/PA"] in ({""} if lateral else {"AP", "PA"})
        assert r["Sex"] in {"Male", "Female"}
        assert 18 <= int(r["Age"]) <= 90
        assert {r[c] for c in HEADER[5:]} <= LABEL_VALUES
        sexes_by_patient.setdefault(Path(r["Path"]).parts[2], set()).add(r["Sex"])
    assert all(len(s) == 1 for s in sexes_by_patient.values()), "a patient keeps one sex"
    labels = [r[c] for r in rows for c in HEADER[5:]]
    assert labels.count("") > len(labels) / 2, "labels are sparse like CheXpert"
    assert "1.0" in labels and "0.0" in labels


def test_images_are_greyscale_jpegs_of_varied_size(demo) -> None:
    out, rows = demo
    aspects = set()
    for r in rows:
        path = out / r["Path"]
        assert path.read_bytes()[:2] == b"\xff\xd8", "JPEG"
        img = grey(path)
        assert img.ndim == 2 and img.dtype == np.uint8
        h, w = img.shape
        assert 320 <= w <= 1024 and 0.74 <= h / w <= 1.31
        aspects.add(round(h / w, 2))
    assert len(aspects) >= 3


def test_images_are_not_flat(demo) -> None:
    """A downstream sharpness check needs real detail, not a blank or blurred-out frame."""
    out, rows = demo
    for r in rows:
        img = grey(out / r["Path"])
        assert img.std() > 20, r["Path"]
        assert cv2.Laplacian(img, cv2.CV_64F).var() > 30, r["Path"]
        assert int(img.max()) - int(img.min()) > 150, "dark air to bright bone, like a radiograph"


def lungs_vs_mediastinum(img: np.ndarray) -> tuple[float, float]:
    """Mean of lung fields (either side) and of the central vertical strip, mid-chest rows."""
    h, w = img.shape
    rows = slice(int(0.3 * h), int(0.55 * h))
    lungs = np.concatenate([img[rows, int(0.2 * w):int(0.35 * w)].ravel(),
                            img[rows, int(0.65 * w):int(0.8 * w)].ravel()])
    strip = img[rows, int(0.46 * w):int(0.54 * w)]
    return float(lungs.mean()), float(strip.mean())


def test_frontal_lungs_darker_than_mediastinum(demo) -> None:
    out, rows = demo
    frontals = [r for r in rows if r["Frontal/Lateral"] == "Frontal"]
    assert frontals
    for r in frontals:
        lungs, strip = lungs_vs_mediastinum(grey(out / r["Path"]))
        assert strip > lungs + 20, r["Path"]


@pytest.mark.parametrize("width,height", [(320, 400), (1024, 768), (500, 650), (700, 700)])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_write_phantom_frontal_anatomy(tmp_path: Path, width: int, height: int, seed: int) -> None:
    path = tmp_path / "a" / "f.jpg"
    write_phantom(path, width, height, seed)
    img = grey(path)
    assert img.shape == (height, width)
    lungs, strip = lungs_vs_mediastinum(img)
    assert strip > lungs + 20


def test_lateral_differs_from_frontal(tmp_path: Path) -> None:
    write_phantom(tmp_path / "f.jpg", 400, 480, 7)
    write_phantom(tmp_path / "l.jpg", 400, 480, 7, lateral=True)
    f, lat = grey(tmp_path / "f.jpg"), grey(tmp_path / "l.jpg")
    assert np.abs(f.astype(int) - lat.astype(int)).mean() > 10
    # a frontal is roughly left-right symmetric; a lateral (spine on one side) is not
    sym = [np.abs(x.astype(int) - x[:, ::-1].astype(int)).mean() for x in (f, lat)]
    assert sym[1] > sym[0]


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    make_demo_data(tmp_path / "a", count=5, seed=3)
    make_demo_data(tmp_path / "b", count=5, seed=3)
    a, b = all_files(tmp_path / "a"), all_files(tmp_path / "b")
    assert len(a) == 6 and a == b


def test_different_seed_gives_different_images(tmp_path: Path) -> None:
    make_demo_data(tmp_path / "a", count=5, seed=3)
    make_demo_data(tmp_path / "b", count=5, seed=4)
    _, rows = read_manifest(tmp_path / "a" / "train.csv")
    first = rows[0]["Path"]
    assert (tmp_path / "a" / first).read_bytes() != (tmp_path / "b" / first).read_bytes()
    assert all_files(tmp_path / "a") != all_files(tmp_path / "b")


def test_count_is_respected(tmp_path: Path) -> None:
    for count in (1, 2, 7):
        _, rows = read_manifest(make_demo_data(tmp_path / str(count), count=count))
        assert len(rows) == count
    with pytest.raises(ValueError):
        make_demo_data(tmp_path / "none", count=0)


def test_cli_writes_data_and_prints_one_line(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "rig.demo_data", str(out), "--count", "3", "--seed", "5"],
        cwd=REPO, capture_output=True, text=True, check=True)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "train.csv" in lines[0]
    _, rows = read_manifest(out / "train.csv")
    assert len(rows) == 3 and all((out / r["Path"]).is_file() for r in rows)
