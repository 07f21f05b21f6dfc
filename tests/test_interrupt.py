"""Ctrl-C: the capture in progress is finished and committed, lights go off, servos park, and the
operator is told how to resume."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

from conftest import REPO, RIG_BIN, open_sim_devices, rig_file, run_rig, session_file

from rig.engine import Engine
from rig.manifest import Manifest
from rig.plan import Plan
from rig.session import load_session
from rig.store import RunStore


def _counts(run: Path) -> tuple[int, int, int]:
    with sqlite3.connect(run / "run.sqlite") as db:
        done = db.execute("SELECT COUNT(*) FROM items WHERE state = 'done'").fetchone()[0]
        accepted = db.execute("SELECT COUNT(*) FROM attempts WHERE status = 'accepted'").fetchone()[0]
        writing = db.execute("SELECT COUNT(*) FROM attempts WHERE status = 'writing'").fetchone()[0]
    return done, accepted, writing


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path: Path, phantoms: Path) -> None:
    rig = rig_file(tmp_path, sim={"download_s": 0.05, "time_scale": 1.0})
    session = session_file(tmp_path, phantoms, rig, repeats=3)
    run = tmp_path / "run"
    proc = subprocess.Popen([*RIG_BIN, "run", str(session)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not (run / "run.sqlite").exists() or _counts(run)[0] < 5):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "lights are off and the servos parked" in err and f"resume with: rig run {session}" in err
    done, accepted, writing = _counts(run)
    assert 5 <= done < 72 and accepted == done and writing == 0  # nothing left half-committed

    resumed = run_rig("run", str(session))
    assert resumed.returncode == 0 and "72/72 done" in resumed.stderr


def test_a_stopped_run_leaves_the_rig_dark_and_parked(tmp_path: Path, phantoms: Path) -> None:
    session = load_session(session_file(tmp_path, phantoms, rig_file(tmp_path), repeats=3))
    store = RunStore.create(session.output, session.path,
                            Plan.of(session, Manifest(session.manifest_csv, session.image_root, None)))
    devices, sim = open_sim_devices(session.rig_path)
    physical = sim.physical
    assert physical is not None
    reader = RunStore(session.output)
    captured: list[str] = []
    engine = Engine(session, store, reader, devices, captured.append)
    lit = []

    def stop_after_some() -> None:
        while len(captured) < 4:
            time.sleep(0.005)
        lit.append(physical())
        engine.stop.set()

    threading.Thread(target=stop_after_some, daemon=True).start()
    try:
        result = engine.run()
        pulses, lights = physical()
    finally:
        devices.close()
        store.close()
        reader.close()
    assert any(level > 0 for level in lit[0][1])  # it was lit while capturing
    assert lights == (0, 0)
    assert result.captured >= 4 and result.stop_reason is None
    assert {ch: pulses[ch] for ch in range(4)} == {s.channel: s.park for s in session.rig.servos.values()}
