"""Operator mistakes: one line naming file, line or field and the fix; exit 2; nothing written."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from conftest import rig_file, run_rig, session_file


def _refused(session: Path, *expected: str) -> str:
    result = run_rig("run", str(session))
    err = result.stderr.strip()
    assert result.returncode == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for text in expected:
        assert text in err, err
    assert not (session.parent / "run").exists(), "nothing may be written for a refused session"
    return err


def _copy_data(phantoms: Path, tmp: Path) -> Path:
    data = tmp / "data"
    shutil.copytree(phantoms, data)
    return data


def _rewrite_manifest(data: Path, change) -> None:  # type: ignore[no-untyped-def]
    with open(data / "train.csv", newline="") as f:
        rows = list(csv.reader(f))
    change(rows)
    with open(data / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_malformed_yaml_names_the_line(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path))
    text = session.read_text().replace("repeats: 1", "repeats: [1")
    session.write_text(text)
    line = text.splitlines().index(next(l for l in text.splitlines() if l.startswith("repeats"))) + 1
    err = _refused(session, "invalid YAML")
    assert f"session.yaml:{line}" in err or f"session.yaml:{line + 1}" in err


def test_unknown_field_names_its_line_and_says_to_remove_it(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path), repeat=3)
    line = session.read_text().splitlines().index("repeat: 3") + 1
    _refused(session, f"session.yaml:{line}: repeat: unknown field")


def test_missing_field_is_named(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path))
    session.write_text("\n".join(l for l in session.read_text().splitlines() if not l.startswith("rig:")))
    _refused(session, "rig: missing field")


def test_unknown_pose_names_the_condition_and_lists_the_poses(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path),
                           conditions=[{"pose": "front", "lighting": "bright"}, {"pose": "fornt", "lighting": "dim"}])
    _refused(session, "conditions[1].pose: unknown pose 'fornt'", "front, left, right_high")


def test_unknown_lighting_is_named(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path),
                           conditions=[{"pose": "front", "lighting": "blinding"}])
    _refused(session, "conditions[0].lighting: unknown lighting 'blinding'")


def test_rig_file_errors_name_the_rig_file(tmp_path: Path, phantoms: Path) -> None:
    rig = rig_file(tmp_path, poses={"front": {"camera_pan": 2500}})
    session = session_file(tmp_path, phantoms, rig)
    _refused(session, "rig.yaml:", "camera_pan=2500 is outside 1000..2000")


def test_missing_manifest(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path),
                           manifest={"csv": str(tmp_path / "nope.csv"), "image_root": str(phantoms)})
    _refused(session, "nope.csv: manifest not found")


def test_manifest_path_escaping_the_image_root(tmp_path: Path, phantoms: Path) -> None:
    data = _copy_data(phantoms, tmp_path)
    _rewrite_manifest(data, lambda rows: rows[3].__setitem__(
        0, "CheXpert-v1.0-small/../../../etc/patient00001/study1/view1_frontal.jpg"))
    _refused(session_file(tmp_path, data, rig_file(tmp_path)), "train.csv:4:", "escapes the image root")


def test_duplicate_image_ids(tmp_path: Path, phantoms: Path) -> None:
    data = _copy_data(phantoms, tmp_path)
    _rewrite_manifest(data, lambda rows: rows.append(list(rows[2])))
    _refused(session_file(tmp_path, data, rig_file(tmp_path)), "train.csv:10:", "duplicate image ID")


def test_unreachable_serial_port_names_the_field(tmp_path: Path, phantoms: Path) -> None:
    rig = rig_file(tmp_path, controller={"port": "/dev/ttyUSB-not-there"})
    _refused(session_file(tmp_path, phantoms, rig), "rig.yaml: controller.port", "/dev/ttyUSB-not-there")


@pytest.mark.parametrize("command", ["status", "export"])
def test_status_and_export_before_any_run_say_how_to_start(tmp_path: Path, phantoms: Path, command: str) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path))
    args = [command, str(session)] + (["--out", str(tmp_path / "x")] if command == "export" else [])
    result = run_rig(*args)
    assert result.returncode == 2 and "rig run" in result.stderr and "Traceback" not in result.stderr


def test_a_manifest_without_images(tmp_path: Path, phantoms: Path) -> None:
    data = _copy_data(phantoms, tmp_path)
    _rewrite_manifest(data, lambda rows: rows.__delitem__(slice(1, None)))
    _refused(session_file(tmp_path, data, rig_file(tmp_path)), "the manifest lists no images")
