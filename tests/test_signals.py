"""The operator's signals stop `rig run` cleanly at every stage: while the plan is built, while capturing,
and when the terminal goes away (SIGHUP)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO, RIG_BIN, rig_file, run_rig, session_file


def _done(run: Path) -> int:
    if not (run / "run.sqlite").exists():
        return 0
    with sqlite3.connect(run / "run.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM items WHERE state = 'done'").fetchone()[0]


def _wait_until(what: str, condition, proc: subprocess.Popen, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"rig run ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.02)


def test_sighup_parks_and_darkens_like_sigterm(tmp_path: Path, phantoms: Path) -> None:
    rig = rig_file(tmp_path, sim={"download_s": 0.05, "time_scale": 1.0})
    session = session_file(tmp_path, phantoms, rig, repeats=3)
    run = tmp_path / "run"
    proc = subprocess.Popen([*RIG_BIN, "run", str(session)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_until("5 captures", lambda: _done(run) >= 5, proc)
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "lights are off and the servos parked" in err and "resume with:" in err
    with sqlite3.connect(run / "run.sqlite") as db:
        writing = db.execute("SELECT COUNT(*) FROM attempts WHERE status = 'writing'").fetchone()[0]
    assert 5 <= _done(run) < 72 and writing == 0


def test_a_plan_over_the_limit_is_refused_quickly_with_its_size(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path), repeats=10 ** 12)
    t0 = time.monotonic()
    result = run_rig("run", str(session), timeout=60)
    took = time.monotonic() - t0
    assert result.returncode == 2, result.stderr
    assert "24000000000000 items" in result.stderr and "max_items" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
    print(f"\nrefused in {took:.1f} s")


def test_sigterm_while_a_long_plan_is_built_stops_promptly(tmp_path: Path, phantoms: Path) -> None:
    # 8 images x 3 conditions x 3 million repeats = 72 million items: legal with this limit, minutes to build.
    session = session_file(tmp_path, phantoms, rig_file(tmp_path), repeats=3_000_000, max_items=100_000_000)
    run = tmp_path / "run"
    building = run / "run.sqlite.new"  # built without a journal (ADR 0015)
    proc = subprocess.Popen([*RIG_BIN, "run", str(session)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The plan's items are being written once the new store's log grows past a few pages.
        _wait_until("the plan build", lambda: building.exists() and building.stat().st_size > 1 << 20, proc,
                    timeout=120)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        proc.kill()
        proc.wait()
    print(f"\nstopped {took:.2f} s after SIGTERM")
    assert proc.returncode == 130, err
    assert took < 10, f"SIGTERM took {took:.1f} s to stop the plan build"
    assert "Traceback" not in err and "stopped" in err
    assert not run.exists(), "a run that never started leaves nothing behind"


def test_sigterm_still_stops_a_process_once_the_display_is_open() -> None:
    """SDL installs its own SIGTERM handler when a display opens unless told not to: it would swallow
    the operator's SIGTERM in every stage after the display opened (calibration, a run's start-up)."""
    code = ("from rig.config import PygameDisplayConfig; from rig.devices.display import PygameDisplay; import time\n"
            "d = PygameDisplay(PygameDisplayConfig(kind='pygame', width=64, height=64, headless=True))\n"
            "print('open', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, text=True, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGTERM
