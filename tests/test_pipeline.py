"""The capture pipeline: download, QA and commit are separate stages, so a slow QA never holds up the
camera's downloads, while the engine never runs more than its backlog ahead of QA and every photo is
still committed exactly once (docs/decisions/0013-staged-capture-pipeline.md)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from conftest import open_sim_devices, rig_file, session_file

from rig.devices import CameraFile, Shot
from rig.devices.kinds import Devices
from rig.engine import Engine, Event, RunResult
from rig.manifest import Manifest
from rig.plan import Plan
from rig.qa import Expected, PhotoQA, Verdict
from rig.session import load_session
from rig.store import RunStore

QA_S = 0.25  # a QA this slow (on top of the real one) is the bottleneck: the camera downloads in 0.05 s
DOWNLOAD_S = 0.05


def _slow_qa(monkeypatch: pytest.MonkeyPatch, started: list[float]) -> None:
    """Every photo's real QA, QA_S later: a QA slower than the camera's download."""
    real = PhotoQA.check_files

    def slow(self: PhotoQA, files: Sequence[bytes], expected: Expected,
             register: bool = False) -> tuple[Verdict, bytes | None]:
        started.append(time.monotonic())
        time.sleep(QA_S)  # QA's cost, not a wait for anything: the checks compare recorded timestamps
        return real(self, files, expected, register)

    monkeypatch.setattr(PhotoQA, "check_files", slow)


def _engine(tmp_path: Path, phantoms: Path,
            on_event: Callable[[Event], None] = lambda event: None) -> tuple[Engine, RunStore, Devices]:
    """An engine on a fresh store over 8 items of one condition, on the simulated rig with real waits."""
    rig = rig_file(tmp_path, sim={"download_s": DOWNLOAD_S, "shutter_lag_s": 0.0, "exposure_s": 0.0,
                                  "time_scale": 1.0})
    session = load_session(session_file(tmp_path, phantoms, rig, conditions=[{"pose": "front", "lighting": "bright"}],
                                        failure_streak=0))
    store = RunStore.create(session.output, session.path,
                            Plan.of(session, Manifest(session.manifest_csv, session.image_root, None)))
    devices, _ = open_sim_devices(session.rig_path, fast=False)  # the camera really takes DOWNLOAD_S
    return Engine(session, store, RunStore(session.output), devices, on_event=on_event), store, devices


def _run(engine: Engine, store: RunStore, devices: Devices) -> RunResult:
    """The whole run, then devices and both store connections closed whatever happened."""
    try:
        return engine.run()
    finally:
        devices.close()
        store.close()
        engine.reader.close()


def _attempts(run: Path) -> list[tuple[int, str, float, float, dict[str, float]]]:
    with sqlite3.connect(run / "run.sqlite") as db:
        rows = db.execute("SELECT seq, status, started_at, finished_at, timing FROM attempts ORDER BY attempt_id")
        return [(seq, status, a, b, json.loads(t)) for seq, status, a, b, t in rows]


def _exactly_once(run: Path, photos: int) -> None:
    """Every photo the camera took is one attempt on record, and every item has exactly one accepted photo."""
    with sqlite3.connect(run / "run.sqlite") as db:
        attempts = db.execute("SELECT COUNT(*) FROM attempts WHERE photo IS NOT NULL").fetchone()[0]
        accepted = db.execute("SELECT COUNT(*), COUNT(DISTINCT seq) FROM attempts WHERE status = 'accepted'").fetchone()
        items = db.execute("SELECT COUNT(*), SUM(state = 'done') FROM items").fetchone()
    assert attempts == photos
    assert accepted == (items[0], items[0]) and items[1] == items[0]


def test_a_slow_qa_does_not_hold_up_the_downloads(tmp_path: Path, phantoms: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """With one thread doing download then QA for each photo, the run lasts at least the sum of all
    downloads and QAs. With separate stages the next downloads (and a second QA) run during a QA."""
    _slow_qa(monkeypatch, [])
    engine, store, devices = _engine(tmp_path, phantoms)
    result = _run(engine, store, devices)
    assert result.captured == 8
    rows = _attempts(tmp_path / "run")
    serial = sum(t["download"] + t["qa"] for *_, t in rows)  # what one I/O thread would spend, one after another
    span = max(r[3] for r in rows) - min(r[2] for r in rows)  # first capture to last commit
    print(f"\n{len(rows)} photos: first capture to last commit {span:.2f} s; downloads + QA one after another "
          f"{serial:.2f} s ({span / serial:.2f})")
    assert span < 0.75 * serial
    _exactly_once(tmp_path / "run", len(rows))


def test_downloads_run_ahead_of_a_slow_qa_but_never_more_than_the_backlog(
        tmp_path: Path, phantoms: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The camera keeps downloading while QA is busy (more than one photo downloaded and waiting for
    QA), yet the engine never triggers with `backlog` photos or more still uncommitted: a rejected photo
    can be retaken soon and memory stays flat."""
    qa_started: list[float] = []
    _slow_qa(monkeypatch, qa_started)
    lock = threading.Lock()
    counts = {"triggered": 0, "downloaded": 0, "judged": 0}
    ahead_of_qa: list[int] = []  # at each download: photos downloaded and not yet taken up by QA
    unjudged: list[int] = []  # at each trigger: photos triggered (this one included) and not yet committed

    def on_event(event: Event) -> None:
        if event.kind in ("accepted", "rejected", "retake", "failed"):
            with lock:
                counts["judged"] += 1

    engine, store, devices = _engine(tmp_path, phantoms, on_event)
    camera = devices.camera
    trigger, download = camera.trigger, camera.download

    def counted_trigger() -> Shot:
        with lock:
            counts["triggered"] += 1
            unjudged.append(counts["triggered"] - counts["judged"])
        return trigger()

    def counted_download(shot: Shot) -> Sequence[CameraFile]:
        files = download(shot)
        with lock:
            counts["downloaded"] += 1
            ahead_of_qa.append(counts["downloaded"] - len(qa_started))
        return files

    camera.trigger, camera.download = counted_trigger, counted_download  # type: ignore[method-assign]
    result = _run(engine, store, devices)
    print(f"\nphotos downloaded ahead of QA: {ahead_of_qa}; uncommitted at each trigger: {unjudged}")
    assert result.captured == 8
    assert max(ahead_of_qa) >= 2  # the camera went on downloading while QA was busy
    assert max(unjudged) <= engine.backlog
    _exactly_once(tmp_path / "run", counts["triggered"])
