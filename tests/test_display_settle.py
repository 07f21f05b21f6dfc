"""The display waits its configured settle frames after the flip before the camera may fire."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import rig_file, session_file

from rig.devices.kinds import open_devices
from rig.engine import Engine
from rig.manifest import Manifest
from rig.plan import Plan
from rig.session import load_session
from rig.store import RunStore


def test_trigger_comes_settle_frames_after_the_flip(tmp_path: Path, phantoms: Path) -> None:
    rig = rig_file(tmp_path, display={"settle_frames": 2, "refresh_hz": 60.0}, sim={"download_s": 0.05})
    session = load_session(session_file(tmp_path, phantoms, rig))
    store = RunStore.create(session.output, session.path,
                            Plan.of(session, Manifest(session.manifest_csv, session.image_root, None)))
    devices = open_devices(session.rig, session.rig_path)  # not fast: the display really waits its frames
    gaps: list[float] = []
    trigger = devices.camera.trigger

    def timed_trigger():  # type: ignore[no-untyped-def]
        gaps.append(time.monotonic() - devices.display.shown_at)  # type: ignore[attr-defined]  # the flip
        return trigger()

    devices.camera.trigger = timed_trigger  # type: ignore[method-assign]
    reader = RunStore(session.output)
    try:
        Engine(session, store, reader, devices).run()
    finally:
        devices.close()
        store.close()
        reader.close()
    settle = 2 / 60.0
    print(f"\nflip -> trigger over {len(gaps)} captures: min {min(gaps) * 1000:.1f} ms, "
          f"{min(gaps) / settle:.2f} x the 2 settle frames ({settle * 1000:.1f} ms)")
    assert len(gaps) == 24
    assert min(gaps) >= 0.97 * settle  # tick granularity is 1 ms; one frame short is 50 %
