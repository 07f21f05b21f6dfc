"""Operator mistakes: one line naming file, line or field and the fix; exit 2; nothing written."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from conftest import png_claiming, rig_file, run_rig, session_file


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
    line = text.splitlines().index(next(t for t in text.splitlines() if t.startswith("repeats"))) + 1
    err = _refused(session, "invalid YAML")
    assert f"session.yaml:{line}" in err or f"session.yaml:{line + 1}" in err


def test_unknown_field_names_its_line_and_says_to_remove_it(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path), repeat=3)
    line = session.read_text().splitlines().index("repeat: 3") + 1
    _refused(session, f"session.yaml:{line}: unknown key 'repeat' (did you mean 'repeats'?)")


def test_missing_field_is_named(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path))
    session.write_text("\n".join(t for t in session.read_text().splitlines() if not t.startswith("rig:")))
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
    rig = rig_file(tmp_path, controller={"kind": "rigctl", "port": "/dev/ttyUSB-not-there"})
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


# ---------------------------------------------------------------- issue 9: bad input that crashed or slipped through


def _line_of(path: Path, text: str, start: int = 0) -> int:
    """1-based number of the first line at or after `start` that contains `text`."""
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines) if i >= start and text in line) + 1


def _one_line_error(result, code: int = 2) -> str:  # type: ignore[no-untyped-def]
    err = result.stderr.strip()
    assert result.returncode == code, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def _image_files(data: Path) -> list[Path]:
    with open(data / "train.csv", newline="") as f:
        return [data / r["Path"] for r in csv.DictReader(f)]


@pytest.mark.parametrize("overrides, bad_key", [
    ({"poses": {"front": {"camera_pan": 1500, "camera_pann": 1500}}}, "camera_pann:"),
    ({"lighting": {"bright": {"left": 60, "centre": 10}}}, "centre:"),
    ({"lighting": {"bright": {"left": 60, "right": 600}}}, "right: 600"),
    ({"roles": {"pan": "pan_cam"}}, "pan: pan_cam"),
])
def test_rig_file_errors_name_the_line_of_the_bad_entry(tmp_path: Path, phantoms: Path, overrides: dict,
                                                        bad_key: str) -> None:
    rig = rig_file(tmp_path, **overrides)
    line = _line_of(rig, bad_key)
    err = _refused(session_file(tmp_path, phantoms, rig), f"rig.yaml:{line}:")
    assert bad_key.split(":")[0].strip() in err


def test_misspelt_key_is_named_with_the_key_it_probably_means(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path))
    session.write_text(session.read_text().replace("conditions:", "conditons:"))
    line = _line_of(session, "conditons:")
    _refused(session, f"session.yaml:{line}: unknown key 'conditons' (did you mean 'conditions'?)")


def test_misspelt_nested_key_is_named_with_the_key_it_probably_means(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path))
    session.write_text(session.read_text().replace("image_root:", "image_rot:"))
    line = _line_of(session, "image_rot:")
    _refused(session, f"session.yaml:{line}: manifest: unknown key 'image_rot' (did you mean 'image_root'?)")


def test_rig_file_given_as_a_session_file_says_so(tmp_path: Path) -> None:
    rig = rig_file(tmp_path)
    err = _one_line_error(run_rig("run", str(rig)))
    assert "rig.yaml" in err and "this is a rig file" in err


def test_session_file_given_as_a_rig_file_says_so(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path))
    err = _one_line_error(run_rig("calibrate", "range", str(session)))
    assert "session.yaml" in err and "this is a session file" in err


def test_plan_change_refusal_counts_the_captures_replan_keeps(tmp_path: Path, phantoms: Path) -> None:
    import re

    rig = rig_file(tmp_path)
    session = session_file(tmp_path, phantoms, rig)
    assert run_rig("run", str(session), "--fast").returncode == 0
    session_file(tmp_path, phantoms, rig, conditions=[
        {"pose": "front", "lighting": "bright"}, {"pose": "left", "lighting": "dim"},
        {"pose": "right_high", "lighting": "bright"}])  # one condition of three replaced
    refused = run_rig("run", str(session), "--fast")
    assert refused.returncode == 2, refused.stderr
    promised = int(re.search(r"keep the (\d+) done captures", refused.stderr).group(1))  # type: ignore[union-attr]
    replanned = run_rig("run", str(session), "--fast", "--replan")
    kept = int(re.search(r"kept (\d+) captures", replanned.stderr).group(1))  # type: ignore[union-attr]
    assert promised == kept == 16, (refused.stderr, replanned.stderr)


@pytest.mark.parametrize("content, reason", [
    (b"", "cannot be decoded"),
    (png_claiming(60000, 60000), "60000x60000"),
])
def test_undecodable_image_raises_value_error_with_its_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    from rig.images import prepare

    image = tmp_path / "bad.png"
    image.write_bytes(content)
    with pytest.raises(ValueError, match=reason):
        prepare(image, 480, 384)


def test_image_over_the_pixel_cap_is_refused_before_decoding(tmp_path: Path, phantoms: Path) -> None:
    from rig.images import prepare

    image = _image_files(phantoms)[0]
    prepare(image, 480, 384, max_pixels=10_000_000)
    with pytest.raises(ValueError, match="max_image_pixels"):
        prepare(image, 480, 384, max_pixels=1000)


def test_undecodable_images_fail_their_items_and_the_run_finishes(tmp_path: Path, phantoms: Path) -> None:
    data = _copy_data(phantoms, tmp_path)
    images = _image_files(data)
    images[0].write_bytes(b"")
    images[4].write_bytes(png_claiming(60000, 60000))
    session = session_file(tmp_path, data, rig_file(tmp_path), max_image_pixels=50_000_000)
    for _ in range(2):  # a rerun must not crash on the same items either
        result = run_rig("run", str(session), "--fast")
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "18/24 done, 6 failed, 0 pending" in result.stderr or "18/24 done, 6 failed" in result.stderr, result.stderr
    status = run_rig("status", str(session))
    assert "cannot be decoded" in status.stdout and "60000x60000" in status.stdout, status.stdout


def _fill_manifest(data: Path, rows: int) -> None:
    """Make the manifest long (repeat its rows under new patient ids) so a runaway field passes 128 KiB."""
    def change(table: list[list[str]]) -> None:
        body = table[1:]
        for n in range(rows):
            row = list(body[n % len(body)])
            row[0] = row[0].replace("patient0", f"patient9{n:05d}")
            table.append(row)
    _rewrite_manifest(data, change)


@pytest.mark.parametrize("kind", ["huge quoted field", "huge line", "unterminated quote"])
def test_csv_field_over_128_kib_is_one_line_naming_the_line(tmp_path: Path, phantoms: Path, kind: str) -> None:
    data = _copy_data(phantoms, tmp_path)
    if kind == "unterminated quote":
        _fill_manifest(data, 4000)
        text = (data / "train.csv").read_text().splitlines(keepends=True)
        fields = text[3].split(",")
        fields[5] = '"' + fields[5]  # a label field opens a quote that is never closed
        text[3] = ",".join(fields)
        (data / "train.csv").write_text("".join(text))
    else:
        big = "x" * 10_000_000
        _rewrite_manifest(data, lambda rows: rows[3].__setitem__(2 if kind == "huge quoted field" else 0,
                                                                  big + (" , " if kind == "huge quoted field" else "")))
    _refused(session_file(tmp_path, data, rig_file(tmp_path)), "train.csv:4:")


def test_unterminated_quote_is_reported_where_it_opens(tmp_path: Path, phantoms: Path) -> None:
    data = _copy_data(phantoms, tmp_path)
    text = (data / "train.csv").read_text().splitlines(keepends=True)
    text[3] = text[3].replace(",", ',"', 1)
    (data / "train.csv").write_text("".join(text))
    _refused(session_file(tmp_path, data, rig_file(tmp_path)), "train.csv:4:", "quote")


def test_repeats_beyond_sqlite_integers_is_refused_before_devices_open(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path), repeats=2 ** 64)
    _refused(session, f"session.yaml:{_line_of(session, 'repeats:')}: repeats:")


def test_output_folder_that_cannot_be_written_is_one_line(tmp_path: Path, phantoms: Path) -> None:
    import os

    run = tmp_path / "run"
    run.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: make the lock file impossible to open instead
        (run / "run.lock").mkdir()
    else:
        run.chmod(0o500)
    result = run_rig("run", str(session_file(tmp_path, phantoms, rig_file(tmp_path))))
    err = _one_line_error(result)
    assert "output" in err and str(run) in err


def test_run_store_with_a_corrupt_last_page_is_one_line(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path))
    assert run_rig("run", str(session), "--fast").returncode == 0
    db = tmp_path / "run" / "run.sqlite"
    data = bytearray(db.read_bytes())
    data[-4096:] = bytes(range(256)) * 16
    db.write_bytes(bytes(data))
    for command in ("run", "status"):
        err = _one_line_error(run_rig(command, str(session), "--fast") if command == "run"
                              else run_rig(command, str(session)))
        assert "run.sqlite" in err, err


@pytest.mark.parametrize("content", [b"", "foreign"])
def test_foreign_or_empty_run_store_is_refused_untouched(tmp_path: Path, phantoms: Path, content: object) -> None:
    import sqlite3

    run = tmp_path / "run"
    run.mkdir()
    db = run / "run.sqlite"
    if content == "foreign":
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE photos(name TEXT)")
        conn.close()
    else:
        db.write_bytes(content)  # type: ignore[arg-type]
    before = db.read_bytes()
    err = _one_line_error(run_rig("run", str(session_file(tmp_path, phantoms, rig_file(tmp_path)))))
    assert "run.sqlite" in err
    assert db.read_bytes() == before, "a refused run store must not be rewritten"
    assert not (run / "run.sqlite-wal").exists()


def test_wrong_image_root_is_refused_before_anything_moves(tmp_path: Path, phantoms: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    session = session_file(tmp_path, phantoms, rig_file(tmp_path),
                           manifest={"csv": str(phantoms / "train.csv"), "image_root": str(empty)})
    _refused(session, "8 of 8", "missing", str(empty / "CheXpert-v1.0-small"), "image_root")


def test_repeated_failures_of_one_kind_are_summarised(tmp_path: Path, phantoms: Path) -> None:
    data = _copy_data(phantoms, tmp_path)
    images = _image_files(data)
    for i in (0, 3, 6):
        images[i].write_bytes(b"")
    result = run_rig("run", str(session_file(tmp_path, data, rig_file(tmp_path))), "--fast")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "cannot be decoded" in line]
    assert len(warnings) <= 2, result.stderr  # the first one, then one counted summary
    assert any("9" in w and "cannot be decoded" in w for w in warnings), result.stderr


def test_moved_image_folder_resumes_against_the_new_root(tmp_path: Path, phantoms: Path) -> None:
    from rig.manifest import Manifest
    from rig.plan import Plan
    from rig.session import load_session
    from rig.store import RunStore

    data = _copy_data(phantoms, tmp_path)
    session = session_file(tmp_path, data, rig_file(tmp_path))
    loaded = load_session(session)
    RunStore.create(loaded.output, loaded.path,
                    Plan.of(loaded, Manifest(loaded.manifest_csv, loaded.image_root, None))).close()  # none taken
    moved = tmp_path / "moved"
    data.rename(moved)
    session_file(tmp_path, moved, rig_file(tmp_path))
    result = run_rig("run", str(session), "--fast")
    assert result.returncode == 0, result.stderr
    assert "24/24 done, 0 failed" in result.stderr, result.stderr


def test_duplicate_yaml_key_is_refused_with_its_line(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path))
    session.write_text(session.read_text() + "repeats: 3\n")
    line = len(session.read_text().splitlines())
    _refused(session, f"session.yaml:{line}:", "repeats", "twice")


def test_duplicate_pose_in_the_rig_file_is_refused_with_its_line(tmp_path: Path, phantoms: Path) -> None:
    rig = rig_file(tmp_path)
    text = rig.read_text().replace("poses:\n", "poses:\n  left:\n    camera_pan: 1400\n", 1)
    rig.write_text(text)
    line = _line_of(rig, "  left:", _line_of(rig, "camera_pan: 1400"))
    _refused(session_file(tmp_path, phantoms, rig), f"rig.yaml:{line}:", "left", "twice")


def test_yes_is_not_a_number_of_repeats(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path))
    session.write_text(session.read_text().replace("repeats: 1", "repeats: yes"))
    _refused(session, f"session.yaml:{_line_of(session, 'repeats:')}: repeats:", "integer")


@pytest.mark.parametrize("char", ["\x00", "\n", "\r"])
def test_control_characters_in_a_manifest_path_are_refused(tmp_path: Path, phantoms: Path, char: str) -> None:
    data = _copy_data(phantoms, tmp_path)
    _rewrite_manifest(data, lambda rows: rows[3].__setitem__(0, rows[3][0].replace("view1", f"vi{char}ew1")))
    _refused(session_file(tmp_path, data, rig_file(tmp_path)), "train.csv:4:", "Path")


def test_run_store_that_cannot_be_created_is_one_line(tmp_path: Path, phantoms: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.sqlite.new").mkdir()  # the store's temp name taken: creating it fails like a read-only folder
    err = _one_line_error(run_rig("run", str(session_file(tmp_path, phantoms, rig_file(tmp_path))), "--fast"))
    assert str(run) in err and "output" in err, err
