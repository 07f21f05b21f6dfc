"""The live run console driven through tmux as an operator over ssh would use it, and `--notify`.

The run uses the simulated rig with half the camera's realistic latencies, still slow enough to pause
by hand; every step waits for what the screen or the run store shows, never for a fixed time.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import REPO, rig_file, run_rig, session_file


def _screen(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-J", "-t", session], capture_output=True, text=True).stdout


def _wait_for(session: str, pattern: str, timeout: float = 120) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, _screen(session))
        if found:
            return found
        time.sleep(0.05)
    width = subprocess.run(["tmux", "display-message", "-p", "-t", session, "#{pane_width}"], capture_output=True,
                           text=True).stdout.strip()
    raise AssertionError(f"{pattern!r} never appeared; screen ({width} columns):\n{_screen(session)}")


def _send(session: str, *keys: str) -> None:
    subprocess.run(["tmux", "send-keys", "-t", session, *keys], check=True)


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.fixture
def slow_session(tmp_path: Path, phantoms: Path) -> Path:
    """24 captures with half the simulated DSLR's latencies (about a quarter of a second each)."""
    rig = rig_file(tmp_path, sim={"time_scale": 0.5})
    return session_file(tmp_path, phantoms, rig)


@pytest.fixture
def tmux_run(slow_session: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`rig run --notify` in a tmux window; after rig exits the window shows its exit status and tty mode."""
    assert shutil.which("tmux"), "tmux is installed by make test"
    name = f"console-{uuid.uuid4().hex[:8]}"
    notes = tmp_path / "notes.txt"
    notify = f"echo $RIG_OUTCOME:$RIG_DONE:$RIG_PLANNED >> {shlex.quote(str(notes))}"
    rig = (f"{shlex.quote(sys.executable)} -m rig.cli run {shlex.quote(str(slow_session))} "
           f"--notify {shlex.quote(notify)}")
    cmd = f"{rig}; echo rig exited with $?; echo tty mode: $(stty -a | grep -o -- '-\\?icanon'); read x"
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "220", "-y", "40", cmd], check=True, cwd=REPO)
    try:
        yield name, notes
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)


def test_p_parks_the_rig_and_r_resumes_it_every_item_taken_exactly_once(
        tmux_run: tuple[str, Path], slow_session: Path, tmp_path: Path) -> None:
    name, notes = tmux_run
    plan = _wait_for(name, r"plan: 24 captures \(8 images x 3 conditions x 1 repeat;.*about \d+m \d+s")
    assert "front-bright" in plan.group(0)
    _wait_for(name, r"keys +p pause +r resume +q stop")
    _wait_for(name, r"done +([2-9]|1\d)/24")  # a few done, most to go
    _send(name, "p")
    _wait_for(name, r"PAUSED +lights off, servos parked, screen blank")
    parked = _wait_for(name, r"parked +controller reports servos ([\d ]+), lights ([\d ]+)")
    rig = yaml.safe_load((tmp_path / "rig.yaml").read_text())
    park = sorted((s["channel"], s["park"]) for s in rig["servos"].values())
    assert [int(v) for v in parked.group(1).split()] == [us for _, us in park]
    assert [int(v) for v in parked.group(2).split()] == [0] * len(rig["lights"])
    paused_at = time.time()
    done = int(_wait_for(name, r"done +(\d+)/24").group(1))
    assert done < 24, "the run finished before the pause took effect"
    deadline = time.monotonic() + 60
    while "paused:" not in ":".join(_lines(notes)):  # --notify ran for the pause, while the run waits
        assert time.monotonic() < deadline, f"--notify never said 'paused'; notes: {_lines(notes)}"
        time.sleep(0.05)
    assert _lines(notes) == [f"paused:{done}:24"]
    time.sleep(1.0)  # how long the operator leaves it paused: nothing may be shot meanwhile
    resumed_at = time.time()
    _send(name, "r")
    _wait_for(name, r"rig exited with 0")
    screen = _wait_for(name, r"tty mode: (-?icanon)")
    assert screen.group(1) == "icanon", "the terminal was left in cbreak mode"
    assert "24/24 done, 0 failed, 0 pending" in _screen(name)
    with sqlite3.connect(tmp_path / "run" / "run.sqlite") as db:
        states = db.execute("SELECT state, count(*) FROM items GROUP BY state").fetchall()
        accepted = db.execute("SELECT seq, count(*) FROM attempts WHERE status = 'accepted' GROUP BY seq").fetchall()
        during = db.execute("SELECT count(*) FROM attempts WHERE started_at BETWEEN ? AND ?",
                            (paused_at, resumed_at)).fetchone()[0]
        others = db.execute("SELECT status, reason FROM attempts WHERE status != 'accepted'").fetchall()
        pauses = db.execute("SELECT reason, resumed_at IS NOT NULL FROM pauses").fetchall()
    assert pauses == [("paused by the operator (p)", 1)], "the pause is kept for rig report, and ended by r"
    assert states == [("done", 24)]
    assert len(accepted) == 24 and all(n == 1 for _, n in accepted)
    assert during == 0, "an attempt was started while the run was paused"
    assert not [s for s, _ in others if s in ("interrupted", "lost")], others
    assert _lines(notes) == [f"paused:{done}:24", "done:24:24"]


def test_q_stops_like_ctrl_c(tmux_run: tuple[str, Path], tmp_path: Path) -> None:
    name, notes = tmux_run
    _wait_for(name, r"done +([1-9]|1\d)/24")
    _send(name, "q")
    _wait_for(name, r"rig exited with 130")
    screen = _screen(name)
    assert "stopped by the operator; lights are off and the servos parked" in screen
    assert re.search(r"tty mode: icanon", _wait_for(name, r"tty mode: -?icanon").group(0))
    assert _lines(notes)[0].startswith("stopped:")
    with sqlite3.connect(tmp_path / "run" / "run.sqlite") as db:
        pending = db.execute("SELECT count(*) FROM items WHERE state = 'pending'").fetchone()[0]
    assert pending > 0


def _env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line.startswith("RIG_"))


def test_notify_gets_the_outcome_and_its_failure_is_only_a_warning(tmp_path: Path, phantoms: Path) -> None:
    rig = rig_file(tmp_path)
    session = session_file(tmp_path, phantoms, rig)
    out = tmp_path / "env.txt"
    done = run_rig("run", str(session), "--fast", "--notify", f"env > {shlex.quote(str(out))}")
    assert done.returncode == 0, done.stderr
    env = _env(out)
    assert env["RIG_OUTCOME"] == "done"
    assert (env["RIG_DONE"], env["RIG_PLANNED"], env["RIG_FAILED"]) == ("24", "24", "0")
    assert env["RIG_SESSION"] == str(session) and env["RIG_REASON"] == ""

    failing = run_rig("run", str(session), "--fast", "--notify", "echo cannot reach the chat >&2; exit 7")
    assert failing.returncode == 0, failing.stderr
    assert "warning: --notify command exited with status 7: cannot reach the chat" in failing.stderr
    assert "Traceback" not in failing.stderr


def test_notify_says_failed_with_the_reason(tmp_path: Path, phantoms: Path) -> None:
    rig = rig_file(tmp_path, controller={"kind": "rigctl", "port": str(tmp_path / "no-such-port")})
    session = session_file(tmp_path, phantoms, rig)
    out = tmp_path / "env.txt"
    result = run_rig("run", str(session), "--notify", f"env > {shlex.quote(str(out))}")
    assert result.returncode == 2, result.stderr
    env = _env(out)
    assert env["RIG_OUTCOME"] == "failed" and env["RIG_DONE"] == ""  # the run never started
    assert "controller.port" in env["RIG_REASON"] and env["RIG_REASON"] in result.stderr


def test_without_a_terminal_keys_are_not_read_and_nothing_is_drawn(tmp_path: Path, phantoms: Path) -> None:
    rig = rig_file(tmp_path)
    session = session_file(tmp_path, phantoms, rig)
    result = subprocess.run([sys.executable, "-m", "rig.cli", "run", str(session), "--fast"], input="pq\n",
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr  # "p" and "q" on a pipe are not keys
    lines = result.stderr.splitlines()
    assert lines[0].startswith("plan: 24 captures (8 images x 3 conditions x 1 repeat; front-bright")
    assert "24 captured this run" in lines[-1]
    assert not [line for line in lines if "pause" in line or "━" in line]


def test_calibration_shows_photo_n_of_n_with_an_eta(tmp_path: Path) -> None:
    rig = yaml.safe_load((REPO / "calibration" / "sim-rig.yaml").read_text())
    # no camera latencies or motion waits: detecting the board in each 800x600 photo keeps every photo on screen
    # for tenths of a second, long enough to be read mid-run
    rig["sim"].update(photo_width=800, photo_height=600, time_scale=0.0, lens={"focal_mm": 45.0})
    rig["motion"].update(move_ms=0, settle_ms=0)
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(rig, sort_keys=False))
    name = f"calibrate-{uuid.uuid4().hex[:8]}"
    cmd = (f"{shlex.quote(sys.executable)} -m rig.cli calibrate intrinsics {shlex.quote(str(path))}; "
           "echo rig exited with $?; read x")
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "160", "-y", "30", cmd], check=True, cwd=REPO)
    try:
        during = _wait_for(name, r"calibrating intrinsics of sim-rig .* photo ([1-9]|1[0-4])/15 .*ETA")
        assert "ETA" in during.group(0)
        _wait_for(name, r"rig exited with 0")
        assert "15 photos; saved to" in _screen(name)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)


def test_the_estimate_is_the_rigs_motion_display_and_camera_timing(tmp_path: Path) -> None:
    from rig.config import load_rig
    from rig.console import estimate_s
    from rig.demo_data import make_demo_data
    from rig.plan import planned_conditions
    from rig.session import load_session
    from rig.sim.camera import SimCamera
    from rig.sim.studio import Studio

    data = tmp_path / "data"
    make_demo_data(data, count=2, seed=1)
    rig_path = rig_file(tmp_path, motion={"move_ms": 150, "settle_ms": 100}, display={"settle_frames": 3},
                        sim={"time_scale": 1.0, "download_s": 0.1})
    rig = load_rig(rig_path)
    conditions = planned_conditions(load_session(session_file(tmp_path, data, rig_path)))
    camera = SimCamera(Studio(rig), lambda: None, lambda: None)  # type: ignore[arg-type,return-value]
    seconds, complete = estimate_s(rig, conditions, 6, camera)
    # park -> front: light arms 300 us at 3000 us/s (0.1 s) < move_ms; front -> left: move_ms;
    # left -> right_high: pan 340 us at 2000 us/s = 0.17 s > move_ms. Each + settle 0.1 s.
    moves = (0.15 + 0.1) + (0.15 + 0.1) + (0.17 + 0.1)
    # per photo: 3 frames at 60 Hz + shutter lag 0.15 + exposure 1/30; the 0.1 s download overlaps it
    photo = 3 / 60 + 0.15 + 1 / 30
    assert complete and seconds == pytest.approx(moves + 6 * photo)
    no_timing = object()  # a camera that does not know its time yet: only the rig's own timing counts
    assert estimate_s(rig, conditions, 6, no_timing) == (pytest.approx(moves + 6 * 3 / 60), False)


def test_a_resumed_run_says_what_is_done_and_estimates_from_the_measured_rate(tmp_path: Path, phantoms: Path) -> None:
    rig = rig_file(tmp_path, sim={"download_s": 0.05, "time_scale": 1.0})
    session = session_file(tmp_path, phantoms, rig)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "rig.cli", "run", str(session)], cwd=REPO, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _done_items(run) < 4:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "4 captures never happened"
            time.sleep(0.05)
        proc.send_signal(2)  # Ctrl-C
        _, first = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert first.splitlines()[0].startswith("plan: 24 captures (8 images x 3 conditions x 1 repeat; ")
    done = _done_items(run)
    result = run_rig("run", str(session), "--fast")
    assert result.returncode == 0, result.stderr
    line = result.stderr.splitlines()[0]
    assert f"; already {done} done, 0 failed, {24 - done} to go; about " in line
    assert re.search(r"at the measured \d+\.\d/min$", line), line


def _done_items(run: Path) -> int:
    if not (run / "run.sqlite").exists():
        return 0
    with sqlite3.connect(run / "run.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM items WHERE state = 'done'").fetchone()[0]


def test_notify_says_paused_when_the_run_pauses_itself(tmp_path: Path, phantoms: Path) -> None:
    rig = rig_file(tmp_path)
    session = session_file(tmp_path, phantoms, rig, conditions=[{"pose": "front", "lighting": "flood"}], retries=0,
                           failure_streak=3)
    out = tmp_path / "env.txt"
    result = run_rig("run", str(session), "--fast", "--notify", f"env > {shlex.quote(str(out))}")
    assert result.returncode == 3, result.stderr
    env = _env(out)
    assert env["RIG_OUTCOME"] == "paused" and "3 consecutive items" in env["RIG_REASON"]
    assert env["RIG_FAILED"] == "3" and env["RIG_PENDING"] == "5"


def test_a_run_started_in_the_background_of_a_terminal_is_not_stopped_by_it(tmp_path: Path, phantoms: Path) -> None:
    """`rig run ... > log 2>&1 &` typed in an interactive shell: a background job that puts the terminal in
    cbreak mode is stopped by the kernel ("Stopped (tty output)") and would wait there forever."""
    session = session_file(tmp_path, phantoms, rig_file(tmp_path))
    log = tmp_path / "run.log"
    name = f"console-bg-{uuid.uuid4().hex[:8]}"
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "150", "-y", "30", "bash --norc -i"], check=True,
                   cwd=REPO)
    try:
        _send(name, f"{shlex.quote(sys.executable)} -m rig.cli run {shlex.quote(str(session))} --fast "
                    f"> {shlex.quote(str(log))} 2>&1 &", "Enter")
        deadline = time.monotonic() + 180
        while "total 24/24 done" not in (log.read_text() if log.exists() else ""):
            if time.monotonic() > deadline:
                _send(name, "jobs -l", "Enter")
                raise AssertionError(f"the background run never finished:\n{_screen(name)}")
            time.sleep(0.1)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
