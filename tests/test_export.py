"""`rig export` says how complete the data set is, never silently replaces another run's export,
recovers from a kill at any moment, and names a photo that went missing from the run."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, RIG_BIN, rig_file, run_rig, session_file

KILLS = 18


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, phantoms: Path) -> Path:
    """A finished run of 48 captures with registered crops (96 files); copy it before changing it."""
    d = tmp_path_factory.mktemp("finished")
    session = session_file(d, phantoms, rig_file(d), repeats=2, qa={"save_registered": True})
    result = run_rig("run", str(session), timeout=600)
    assert result.returncode == 0, result.stderr
    return d


def _copy(finished: Path, to: Path, phantoms: Path) -> Path:
    """The finished run in a folder of its own (the same run: same store), with its session file."""
    shutil.copytree(finished / "run", to / "run")
    return session_file(to, phantoms, rig_file(to), repeats=2, qa={"save_registered": True})


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def _check_export(out: Path, run: Path) -> int:
    """The export (--photos full) holds exactly the run's accepted photos and crops, intact, and its
    dataset card; returns how many photos."""
    with sqlite3.connect(run / "run.sqlite") as db:
        accepted = dict(db.execute("SELECT attempt_id, sha256 FROM attempts WHERE status = 'accepted'").fetchall())
        created = db.execute("SELECT value FROM meta WHERE key = 'created'").fetchone()[0]
    with open(out / "captures.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {int(r["Attempt"]): r["SHA256"] for r in rows} == accepted
    expected = {"captures.csv", "export.json", "README.md"}
    for r in rows:
        assert hashlib.sha256((out / r["Path"]).read_bytes()).hexdigest() == r["SHA256"]
        assert r["Registered"] and (out / r["Registered"]).is_file()
        expected |= {r["Path"], r["Registered"]}
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == expected
    info = json.loads((out / "export.json").read_text())
    assert info["run_created"] == created and info["photos"] == len(rows)
    return len(rows)


def _counts(run: Path) -> dict[str, int]:
    with sqlite3.connect(run / "run.sqlite") as db:
        return dict(db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())


# ---------------------------------------------------------------- item 8: completeness and replacing


def test_every_export_says_how_complete_the_run_is(tmp_path: Path, phantoms: Path, finished: Path) -> None:
    session = _copy(finished, tmp_path / "whole", phantoms)
    done = run_rig("export", str(session), "--out", str(tmp_path / "whole-export"), "--photos", "full")
    assert done.returncode == 0, done.stderr
    assert "48/48 done, 0 failed, 0 pending" in done.stdout and "incomplete" not in done.stderr
    assert json.loads((tmp_path / "whole-export" / "export.json").read_text())["complete"] is True

    # A run with an image that cannot be decoded, stopped by the operator part way.
    data = tmp_path / "data"
    shutil.copytree(phantoms, data)
    with open(data / "train.csv", newline="") as f:
        (data / next(csv.DictReader(f))["Path"]).write_bytes(b"not a jpeg")
    part = tmp_path / "part"
    part.mkdir()
    session = session_file(part, data, rig_file(part, sim={"download_s": 0.05, "time_scale": 1.0}), repeats=3)
    proc = subprocess.Popen([*RIG_BIN, "run", str(session)], cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
            not (part / "run" / "run.sqlite").exists() or _counts(part / "run").get("done", 0) < 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130, proc.stderr.read() if proc.stderr else ""
    counts = _counts(part / "run")
    planned = sum(counts.values())
    assert counts.get("failed", 0) >= 1 and counts.get("pending", 0) > 0
    result = run_rig("export", str(session), "--out", str(tmp_path / "part-export"), "--photos", "full")
    assert result.returncode == 0, result.stderr
    assert f"{counts['done']}/{planned} done, {counts['failed']} failed, {counts['pending']} pending" in result.stdout
    assert "incomplete" in result.stderr and f"rig run {session}" in result.stderr
    info = json.loads((tmp_path / "part-export" / "export.json").read_text())
    assert (info["complete"], info["done"], info["failed"], info["pending"]) == (
        False, counts["done"], counts["failed"], counts["pending"])


def test_an_export_of_another_run_is_replaced_only_with_replace(tmp_path: Path, phantoms: Path,
                                                               finished: Path) -> None:
    ours = _copy(finished, tmp_path / "ours", phantoms)
    (tmp_path / "theirs").mkdir()
    theirs = session_file(tmp_path / "theirs", phantoms, rig_file(tmp_path / "theirs"),
                          conditions=[{"pose": "front", "lighting": "bright"}])
    assert run_rig("run", str(theirs)).returncode == 0
    out = tmp_path / "export"
    assert run_rig("export", str(theirs), "--out", str(out), "--photos", "full").returncode == 0
    before = (out / "captures.csv").read_bytes()

    refused = run_rig("export", str(ours), "--out", str(out), "--photos", "full")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert "another run" in refused.stderr and "--replace" in refused.stderr and str(theirs) in refused.stderr
    assert (out / "captures.csv").read_bytes() == before and _leftovers(out) == []

    again = run_rig("export", str(theirs), "--out", str(out), "--photos", "full")  # the same run again: no flag needed
    assert again.returncode == 0, again.stderr
    replaced = run_rig("export", str(ours), "--out", str(out), "--photos", "full", "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert _check_export(out, tmp_path / "ours" / "run") == 48

    (out / "export.json").unlink()  # an export that does not say where it came from (an older rig's)
    unknown = run_rig("export", str(ours), "--out", str(out), "--photos", "full")
    assert unknown.returncode == 2 and "--replace" in unknown.stderr and unknown.stderr.count("\n") == 1


# ---------------------------------------------------------------- item 21: kills


def _export_states(out: Path) -> dict[str, object]:
    """States a kill can leave, built from a real export at `out` (which is then removed or kept)."""
    def half(folder: Path) -> None:
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        for p in files[::2]:
            p.unlink()
    return {"half-removed old beside out": lambda: (shutil.copytree(out, out.with_name(f".{out.name}.old")),
                                                    half(out.with_name(f".{out.name}.old"))),
            "old without out (between the renames)": lambda: (
                shutil.copytree(out, out.with_name(f".{out.name}.partial")),
                os.replace(out, out.with_name(f".{out.name}.old"))),
            "half-written partial": lambda: (shutil.copytree(out, out.with_name(f".{out.name}.partial")),
                                             half(out.with_name(f".{out.name}.partial"))),
            "half-removed trash": lambda: (shutil.copytree(out, out.with_name(f".{out.name}.trash")),
                                           half(out.with_name(f".{out.name}.trash")))}


@pytest.mark.parametrize("state", ["half-removed old beside out", "old without out (between the renames)",
                                   "half-written partial", "half-removed trash"])
def test_export_recovers_from_each_state_a_kill_can_leave(tmp_path: Path, phantoms: Path, finished: Path,
                                                          state: str) -> None:
    session = _copy(finished, tmp_path, phantoms)
    out = tmp_path / "export"
    assert run_rig("export", str(session), "--out", str(out), "--photos", "full").returncode == 0
    _export_states(out)[state]()
    result = run_rig("export", str(session), "--out", str(out), "--photos", "full")
    assert result.returncode == 0, result.stderr
    assert _check_export(out, tmp_path / "run") == 48
    assert _leftovers(out) == []


def test_sigkill_at_random_moments_of_an_export_then_reexport_gives_a_complete_export(
        tmp_path: Path, phantoms: Path, finished: Path) -> None:
    """Kills aimed at the writing of the new export, at the swap and removal of the old one, and at
    random times; each next export starts from what the kill left."""
    session = _copy(finished, tmp_path, phantoms)
    out = tmp_path / "export"
    launched = time.monotonic()
    assert run_rig("export", str(session), "--out", str(out), "--photos", "full").returncode == 0
    whole_s = time.monotonic() - launched  # an export from launch to exit: random kills are aimed inside it
    rng = random.Random(20261130)
    landed: dict[str, int] = {}
    kills = finished_early = 0
    while kills < KILLS:
        aim = ("writing", "removal", "random")[kills % 3]
        proc = subprocess.Popen([*RIG_BIN, "export", str(session), "--out", str(out), "--photos", "full"], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        started = time.monotonic()
        delay = rng.uniform(0, 0.005) if aim == "writing" else rng.uniform(0.2, max(0.3, whole_s))
        seen_at = None
        while proc.poll() is None:
            names = set(os.listdir(tmp_path))
            now = time.monotonic()
            if aim == "writing" and f".{out.name}.partial" in names:
                seen_at = seen_at or now
            if ((aim == "writing" and seen_at is not None and now - seen_at >= delay)
                    or (aim == "removal" and names & {f".{out.name}.old", f".{out.name}.trash"})
                    or (aim == "random" and now - started >= delay)):
                proc.kill()
                break
            time.sleep(0.0002)
        err = proc.communicate(timeout=60)[1]
        if proc.returncode == 0:
            finished_early += 1
            assert finished_early <= 4 * KILLS, "the exports finish before the kills land; make the run bigger"
            continue
        assert proc.returncode == -signal.SIGKILL, err
        kills += 1
        left = _leftovers(out)
        where = ("mid-removal" if any(n.endswith((".old", ".trash")) for n in left)
                 else "mid-write" if left else "before or after the export")
        landed[where] = landed.get(where, 0) + 1

    final = run_rig("export", str(session), "--out", str(out), "--photos", "full")
    assert final.returncode == 0, final.stderr
    print(f"\n{kills} SIGKILLs landed: {landed}; {finished_early} exports finished between them")
    assert landed.get("mid-removal", 0) >= 3 and landed.get("mid-write", 0) >= 3
    assert _check_export(out, tmp_path / "run") == 48
    assert _leftovers(out) == []


# ---------------------------------------------------------------- item 26: files gone from the run


def test_status_verify_finds_missing_and_changed_files_and_export_names_the_missing_photo(
        tmp_path: Path, phantoms: Path, finished: Path) -> None:
    session = _copy(finished, tmp_path, phantoms)
    run = tmp_path / "run"
    clean = run_rig("status", str(session), "--verify")
    assert clean.returncode == 0 and "verified 96 files" in clean.stdout, clean.stdout + clean.stderr
    with sqlite3.connect(run / "run.sqlite") as db:
        photos = [r[0] for r in db.execute(
            "SELECT photo FROM attempts WHERE status = 'accepted' ORDER BY attempt_id LIMIT 2")]
        crop = db.execute("SELECT registered FROM attempts WHERE status = 'accepted' ORDER BY attempt_id DESC"
                          ).fetchone()[0]
    gone = run / photos[1]
    gone.unlink()
    out = tmp_path / "export"
    result = run_rig("export", str(session), "--out", str(out))  # the default, masked: reads the photo too
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert str(gone) in result.stderr and "missing" in result.stderr and "--verify" in result.stderr
    assert "free space" not in result.stderr
    assert not out.exists() and _leftovers(out) == []

    edited = run / photos[0]
    data = bytearray(edited.read_bytes())
    data[len(data) // 2] ^= 0xFF
    edited.write_bytes(bytes(data))
    (run / crop).write_bytes((run / crop).read_bytes()[:100])
    assert run_rig("status", str(session)).returncode == 0  # plain status does not read every file
    verified = run_rig("status", str(session), "--verify")
    assert verified.returncode == 1, verified.stderr
    assert "3 of 96 files missing or changed" in verified.stdout
    lines = verified.stdout.splitlines()
    assert any(str(gone) in line and "missing" in line for line in lines)
    assert any(str(edited) in line and "same size, different sha256" in line for line in lines)
    assert any(str(run / crop) in line and "changed: 100 bytes" in line for line in lines)
