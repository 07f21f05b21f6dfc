"""Exactly once across SIGKILL: kill the real `rig run` at random moments, resume, check the result."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, RIG_BIN, rig_file, run_rig, session_file

KILLS = 20


def _writing(run: Path) -> bool:
    with sqlite3.connect(run / "run.sqlite") as db:
        return db.execute("SELECT 1 FROM attempts WHERE status = 'writing' LIMIT 1").fetchone() is not None


def _done(run: Path) -> int:
    if not (run / "run.sqlite").exists():
        return 0
    with sqlite3.connect(run / "run.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM items WHERE state = 'done'").fetchone()[0]


@pytest.mark.parametrize("lag", [0, [0, 3]], ids=["steady-display", "jittery-display"])
def test_sigkill_at_random_moments_then_resume_gives_exactly_one_photo_per_item(
        tmp_path: Path, phantoms: Path, lag: object) -> None:
    """With a jittery display QA rejects about half the photos: rejected files are written and
    killed mid-write too, and must stay exactly those their attempt rows name."""
    rig = rig_file(tmp_path, sim={"download_s": 0.03, "shutter_lag_s": 0.005, "time_scale": 1.0,
                                  "display_lag_frames": lag})
    # Retakes count across runs, and the first item after each start is photographed on a display that
    # may still lag: with a jittery display give it retakes for every restart.
    session = session_file(tmp_path, phantoms, rig, repeats=6, retries=2 if lag == 0 else 40)  # 144 items
    run = tmp_path / "run"
    rng = random.Random(20261127)
    kills, finished_early, progress, aimed = 0, 0, [], 0
    while kills < KILLS:
        before = _done(run)
        proc = subprocess.Popen([*RIG_BIN, "run", str(session)], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # Kill only once this process has committed a capture, never during its start-up (on a slow
            # machine that can take longer than a whole random delay): every kill interrupts real
            # progress. Every other kill is aimed at a photo being written (an attempt journaled as
            # `writing`), the rest land at a random moment after that.
            deadline = time.monotonic() + 120
            while _done(run) <= before and proc.poll() is None:
                assert time.monotonic() < deadline, "rig run never committed a capture"
                time.sleep(0.01)
            if kills % 2:
                while not _writing(run) and proc.poll() is None:
                    assert time.monotonic() < deadline, "no photo was ever being written"
                    time.sleep(0.002)
                aimed += proc.poll() is None
            else:
                proc.wait(timeout=rng.uniform(0.0, 0.5))
            if proc.poll() is not None:
                finished_early += 1
                assert proc.returncode == 0
                assert finished_early < 3, f"the session finished after only {kills} kills; make it longer"
                continue
            raise subprocess.TimeoutExpired(proc.args, 0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            kills += 1
        progress.append(_done(run))

    # The kills interrupted real progress: done rose between most of them, and some cut a photo mid-write.
    rose = sum(b > a for a, b in zip([0, *progress], progress))
    assert rose == len(progress) == KILLS, f"done after each kill: {progress}"
    final = run_rig("run", str(session), "--fast")  # nothing is killed now: the rest needs no real latencies
    assert final.returncode == 0, final.stderr
    print(f"\n{kills} SIGKILLs; done after each: {progress}; final run: {final.stderr.strip().splitlines()[-1]}")

    with sqlite3.connect(run / "run.sqlite") as db:
        planned = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        states = dict(db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
        accepted = db.execute("SELECT seq, photo, sha256, bytes FROM attempts WHERE status = 'accepted'").fetchall()
        writing = db.execute("SELECT COUNT(*) FROM attempts WHERE status = 'writing'").fetchone()[0]
        interrupted = db.execute("SELECT COUNT(*) FROM attempts WHERE status = 'interrupted'").fetchone()[0]
        rejected = db.execute("SELECT COUNT(*) FROM attempts WHERE status = 'rejected'").fetchone()[0]
        kept = [f for (files,) in db.execute("SELECT files FROM attempts WHERE status IN ('accepted', 'rejected')")
                for f in json.loads(files)]
    print(f"{planned} planned, {len(accepted)} accepted, {rejected} rejected by QA, "
          f"{interrupted} attempts interrupted mid-write and retaken")
    assert interrupted >= 1, f"no kill of the {aimed} aimed at a write cut one short"
    assert planned == 144 and states == {"done": 144}
    assert len(accepted) == 144 and len({seq for seq, *_ in accepted}) == 144  # one photo per item, no duplicates
    assert writing == 0
    for _, photo, sha, size in accepted:
        data = (run / photo).read_bytes()
        assert len(data) == size and hashlib.sha256(data).hexdigest() == sha
    on_disk = {p.relative_to(run).as_posix() for tree in ("photos", "rejected") for p in (run / tree).rglob("*")
               if p.is_file()}
    # No stray, temp or orphaned files: every file is an accepted photo, or a photo QA rejected, kept
    # with its attempt row.
    assert {photo for _, photo, _, _ in accepted} <= set(kept)
    assert on_disk == set(kept)
    leftovers = [p.name for p in run.rglob("*") if p.name.endswith((".tmp", ".new", ".partial"))]
    assert leftovers == []
