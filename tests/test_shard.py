"""Past one rig: `rig shard` splits a session by patient into sessions that run on their own, and
`rig export --merge` puts their runs back together as the data set one run would have made."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import rig_file, run_rig, session_file

CONDITIONS = [{"pose": "front", "lighting": "bright"}, {"pose": "left", "lighting": "dim"}]


def _captured(export: Path) -> set[tuple[str, str, str]]:
    """(image, condition, repeat) of every photo in an export (its Path is <image>_<condition>_<repeat>.<ext>)."""
    with open(export / "captures.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    out = set()
    for r in rows:
        assert (export / r["Path"]).is_file(), r["Path"]
        rep = r["Path"].rsplit(".", 1)[0].rsplit("_", 1)[1]
        out.add((r["Source"], r["Condition"], rep))
    assert len(out) == len(rows)
    return out


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory, phantoms: Path) -> tuple[Path, list[Path]]:
    """The phantoms' session run whole, and split into 3 shards each run on its own."""
    d = tmp_path_factory.mktemp("shard")
    session = session_file(d, phantoms, rig_file(d), conditions=CONDITIONS, qa={"save_registered": True})
    result = run_rig("shard", str(session), "--rigs", "3")
    assert result.returncode == 0, result.stderr
    shards = sorted((d / "session.shards").glob("shard-*-of-3.yaml"))
    assert [p.name for p in shards] == [f"shard-{k}-of-3.yaml" for k in (1, 2, 3)], result.stdout
    for s in [session, *shards]:
        run = run_rig("run", str(s), "--fast")
        assert run.returncode == 0, run.stderr
    return session, shards


def test_shards_split_patients_and_their_merged_export_equals_one_runs_export(
        tmp_path: Path, sharded: tuple[Path, list[Path]]) -> None:
    session, shards = sharded
    patients = []
    for s in shards:
        with open(s.with_suffix(".csv"), newline="") as f:
            patients.append({r["Path"].split("/")[-3] for r in csv.DictReader(f)})
    assert all(patients) and sum(len(p) for p in patients) == len(set().union(*patients)) == 4  # none in two
    outputs = {yaml.safe_load(s.read_text())["output"] for s in shards}
    assert len(outputs) == 3

    whole = run_rig("export", str(session), "--out", str(tmp_path / "whole"), "--photos", "full")
    assert whole.returncode == 0, whole.stderr
    merged = run_rig("export", str(shards[0]), "--merge", *map(str, shards[1:]), "--out", str(tmp_path / "merged"),
                     "--photos", "full")
    assert merged.returncode == 0, merged.stderr
    expected = _captured(tmp_path / "whole")
    assert len(expected) == 8 * len(CONDITIONS)
    assert _captured(tmp_path / "merged") == expected
    layout = {p.relative_to(tmp_path / "whole").as_posix() for p in (tmp_path / "whole").rglob("*.*")}
    assert {p.relative_to(tmp_path / "merged").as_posix() for p in (tmp_path / "merged").rglob("*.*")} == layout
    info = json.loads((tmp_path / "merged" / "export.json").read_text())
    assert info["complete"] and info["photos"] == len(expected) and len(info["merged"]) == 3

    one = run_rig("export", str(shards[0]), "--out", str(tmp_path / "merged"))  # one shard onto the merge of all
    assert one.returncode == 2 and "the merge of 3 runs" in one.stderr and "--merge" in one.stderr, one.stderr
    assert _captured(tmp_path / "merged") == expected


def test_merge_refuses_overlapping_or_mismatched_runs_and_writes_nothing(
        tmp_path: Path, sharded: tuple[Path, list[Path]]) -> None:
    session, shards = sharded
    out = tmp_path / "out"
    overlap = run_rig("export", str(shards[0]), "--merge", str(session), "--out", str(out))
    assert overlap.returncode == 2 and "overlaps" in overlap.stderr and "is in both" in overlap.stderr, overlap.stderr
    assert len(overlap.stderr.strip().splitlines()) == 1, overlap.stderr

    stricter = tmp_path / shards[1].name
    data = yaml.safe_load(shards[1].read_text())
    data.update(qa={**data.get("qa", {}), "min_sharpness": 0.9},
                manifest={"csv": str(shards[1].with_suffix(".csv")),
                          "image_root": str((shards[1].parent / data["manifest"]["image_root"]).resolve())},
                rig=str((shards[1].parent / data["rig"]).resolve()),
                output=str((shards[1].parent / data["output"]).resolve()))
    stricter.write_text(yaml.safe_dump(data))
    mismatch = run_rig("export", str(shards[0]), "--merge", str(stricter), "--out", str(out))
    assert mismatch.returncode == 2 and "QA thresholds" in mismatch.stderr, mismatch.stderr
    partial = run_rig("export", str(shards[0]), "--merge", str(shards[1]), "--out", str(out))
    assert partial.returncode == 2 and "shard-3-of-3.yaml is not given" in partial.stderr, partial.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_shard_refuses_more_rigs_than_patients_and_an_existing_split(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path))
    too_many = run_rig("shard", str(session), "--rigs", "5")
    assert too_many.returncode == 2 and "only 4 patients" in too_many.stderr, too_many.stderr
    assert not (tmp_path / "session.shards").exists()
    assert run_rig("shard", str(session), "--rigs", "2").returncode == 0
    again = run_rig("shard", str(session), "--rigs", "2")
    assert again.returncode == 2 and "--replace" in again.stderr, again.stderr
    assert run_rig("shard", str(session), "--rigs", "4", "--replace").returncode == 0
    assert sorted(p.name for p in (tmp_path / "session.shards").glob("*.yaml")) == [
        f"shard-{k}-of-4.yaml" for k in (1, 2, 3, 4)]
    shutil.rmtree(tmp_path / "session.shards")
