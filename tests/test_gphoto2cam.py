"""The gphoto2 camera driver against libgphoto2's real PTP stack (the wheel's virtual USB camera).

The virtual camera counts captures per process and reports its store full after 26, so every test
that captures runs its scenario in a fresh Python process; tests that only read or write settings
run in-process. Faults are injected with real calls: a `gp.Camera` subclass that raises the error
libgphoto2 would raise, the vusb magic opcode that makes the camera announce an extra file, and a
simulated unplug (frame file gone, no camera port library).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rig.devices.gphoto2cam import GPhoto2Camera, list_cameras
from rig.errors import ConfigError
from rig.sim.vcam import VirtualCameraDir

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = textwrap.dedent(
    """
    import json, threading, time
    import cv2, numpy as np
    import gphoto2 as gp
    from rig.devices.gphoto2cam import GPhoto2Camera
    from rig.errors import CameraError, CameraUnavailable
    from rig.sim.vcam import SimGPhoto2Camera, VirtualCameraDir

    rendered = []

    def render():
        # a different picture per shot: grey level and the shot's number drawn in
        n = len(rendered) + 1
        img = np.full((96, 128, 3), (n * 37) % 256, np.uint8)
        cv2.putText(img, str(n), (8, 70), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
        jpeg = cv2.imencode(".jpg", img)[1].tobytes()
        rendered.append(jpeg)
        return jpeg

    def decoded(data):
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)

    def same_picture(data, jpeg):
        return bool(np.array_equal(decoded(data), decoded(jpeg)))

    FAST = dict(busy_backoff_s=0.01, reconnect_backoff_s=0.05, reconnect_backoff_max_s=0.2)
    out = {}
    """
)


def run_scenario(body: str, timeout: float = 60) -> dict:
    """Run PRELUDE + body in a fresh interpreter (fresh capture counter); return its `out` dict."""
    code = PRELUDE + textwrap.dedent(body) + "\nprint('RESULT ' + json.dumps(out))\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.fixture
def vcam(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> VirtualCameraDir:
    vdir = VirtualCameraDir(frame_size=64 * 1024, root=tmp_path)
    for key, value in vdir.env().items():
        monkeypatch.setenv(key, value)
    return vdir


def test_each_shot_returns_the_frame_rendered_for_it() -> None:
    out = run_scenario(
        """
        cam = SimGPhoto2Camera(render, frame_size=1 << 20, settings={"capturetarget": "Memory card"})
        cam.open()
        results = []
        a = cam.trigger(); results.append((a, cam.download(a)))          # download right away
        b = cam.trigger(); c = cam.trigger()                             # downloads overlap triggers
        got = {}
        t = threading.Thread(target=lambda: got.update(c=cam.download(c)))  # I/O thread
        t.start(); t.join()
        results += [(b, cam.download(b)), (c, got["c"])]
        out["exact"] = [files[0].data == rendered[s.number - 1] for s, files in results]
        out["picture"] = [same_picture(files[0].data, rendered[s.number - 1]) for s, files in results]
        out["distinct"] = len({files[0].data for _, files in results})
        out["names"] = [files[0].name for _, files in results]
        # the real driver itself returns the camera's file untouched (here: with the sim's padding)
        raw = cam.camera
        s = cam.trigger()
        cam._pending.pop(s.number)
        out["raw_len"] = len(raw.download(s)[0].data)
        out["deleted"] = s.info["paths"][0] not in raw._owner
        cam.close()
        """
    )
    assert out["exact"] == [True, True, True]
    assert out["picture"] == [True, True, True]
    assert out["distinct"] == 3
    assert all(n.upper().endswith(".JPG") for n in out["names"]) and len(set(out["names"])) == 3
    assert out["raw_len"] == 1 << 20
    assert out["deleted"]


def test_camera_settings_are_applied_and_read_back(vcam: VirtualCameraDir) -> None:
    cam = GPhoto2Camera(settings={"capturetarget": "Memory card", "f-number": "f/8",
                                  "shutterspeed": "0.0050s"})
    with cam:
        cfg = cam._cam.get_config()
        assert cfg.get_child_by_name("f-number").get_value() == "f/8"
        assert cfg.get_child_by_name("shutterspeed").get_value() == "0.0050s"
        assert cam.identity["model"] and cam.identity["serial"]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"f-number": "f/99"}, "camera setting 'f-number': 'f/99' is not offered; choose one of: f/2.8, f/3.5"),
        ({"capturetarget": "SD"}, "choose one of: Internal RAM, Memory card"),
        ({"iso": "100"}, "camera setting 'iso' does not exist"),
        ({"serialnumber": "1"}, "read-only"),
        ({"imagesize": "1024x768"}, "read-only"),  # listed by the camera, but it cannot be changed
    ],
)
def test_bad_settings_name_the_valid_choices(vcam: VirtualCameraDir, settings: dict, expected: str) -> None:
    cam = GPhoto2Camera(settings=settings)
    with pytest.raises(ConfigError) as err:
        cam.open()
    message = str(err.value)
    assert expected in message and "\n" not in message
    if "iso" in settings:
        assert "capturetarget" in message and "f-number" in message  # the names one can use
    assert cam._cam is None  # a failed open leaves no session behind


def test_list_cameras_reports_model_port_serial(vcam: VirtualCameraDir) -> None:
    cams = list_cameras()
    assert len(cams) == 1
    assert cams[0]["port"].startswith("usb:") and cams[0]["model"] and cams[0]["serial"]


def test_model_or_port_that_is_not_attached_is_reported(vcam: VirtualCameraDir) -> None:
    from rig.errors import CameraUnavailable

    with pytest.raises(CameraUnavailable, match="attached: .* on usb:"):
        GPhoto2Camera(model="Canon EOS 5D Mark IV").open()


def test_busy_camera_is_retried_in_the_same_session() -> None:
    out = run_scenario(
        """
        calls = {"capture": 0, "file_get": 0}

        class Busy(gp.Camera):
            # the camera answers "I/O in progress" twice to capture and once to the download
            def capture(self, *a):
                calls["capture"] += 1
                if calls["capture"] <= 2:
                    raise gp.GPhoto2Error(gp.GP_ERROR_CAMERA_BUSY)
                return super().capture(*a)
            def file_get(self, *a):
                calls["file_get"] += 1
                if calls["file_get"] == 1:
                    raise gp.GPhoto2Error(gp.GP_ERROR_CAMERA_BUSY)
                return super().file_get(*a)

        cam = SimGPhoto2Camera(render, frame_size=1 << 20, camera_factory=Busy, **FAST)
        cam.open()
        s = cam.trigger()
        files = cam.download(s)
        out.update(calls=calls, reconnects=cam.camera.reconnects, session=s.info["session"],
                   exact=files[0].data == rendered[0])
        cam.close()
        """
    )
    assert out["calls"] == {"capture": 3, "file_get": 2}
    assert out["reconnects"] == 0 and out["session"] == 1
    assert out["exact"]


def test_unplugged_camera_is_reconnected_and_the_capture_retaken() -> None:
    out = run_scenario(
        """
        cam = SimGPhoto2Camera(render, frame_size=1 << 20, **FAST)
        cam.open()
        vdir = cam.vdir
        first = cam.trigger()
        out["first"] = cam.download(first)[0].data == rendered[0]
        second = cam.trigger()                       # taken, not downloaded yet ...
        vdir.unplug()                                # ... when the cable is pulled
        def replug_once_a_reconnect_failed():         # plugged back while the driver retries
            while cam.camera.reconnects < 2:
                time.sleep(0.005)
            out["replugged_after"] = cam.camera.reconnects - 1
            vdir.replug()
        threading.Thread(target=replug_once_a_reconnect_failed, daemon=True).start()
        third = cam.trigger()                        # must reconnect, fetch shot 2, take shot 3
        f2, f3 = cam.download(second), cam.download(third)
        out["exact"] = [f2[0].data == rendered[1], f3[0].data == rendered[2]]
        out["names"] = [f2[0].name, f3[0].name]
        out["sessions"] = [first.info["session"], second.info["session"], third.info["session"]]
        out["reconnects"] = cam.camera.reconnects
        # gone for good: a one-line CameraUnavailable after the reconnect budget
        vdir.unplug()
        try:
            cam.trigger()
        except CameraUnavailable as exc:
            out["dead"] = str(exc)
        cam.close()
        """
    )
    assert out["first"]
    assert out["exact"] == [True, True]
    assert out["names"][0] != out["names"][1]
    assert out["sessions"][2] > out["sessions"][1] and out["reconnects"] >= 1
    assert out["replugged_after"] >= 1  # at least one reconnect found no camera before the cable came back
    assert "stopped answering" in out["dead"] and "\n" not in out["dead"]


def test_capture_lost_mid_shot_is_retaken_not_reused() -> None:
    out = run_scenario(
        """
        fail = {"n": 0}

        class Drops(gp.Camera):
            # the USB link drops during the first capture of shot 2 (after shot 1 went fine)
            def capture(self, *a):
                fail["n"] += 1
                if fail["n"] == 2:
                    raise gp.GPhoto2Error(gp.GP_ERROR_IO_USB_FIND)
                return super().capture(*a)

        cam = SimGPhoto2Camera(render, frame_size=1 << 20, camera_factory=Drops, **FAST)
        cam.open()
        a = cam.trigger(); b = cam.trigger()
        fa, fb = cam.download(a), cam.download(b)
        out["exact"] = [fa[0].data == rendered[0], fb[0].data == rendered[1]]
        out["paths"] = [a.info["paths"], b.info["paths"]]
        out["sessions"] = [a.info["session"], b.info["session"]]
        cam.close()
        """
    )
    assert out["exact"] == [True, True]
    assert not set(out["paths"][0]) & set(out["paths"][1])
    assert out["sessions"] == [1, 2]


def test_files_announced_before_a_capture_are_not_attributed_and_pairs_are_collected() -> None:
    out = run_scenario(
        """
        def announce_extra_file(cam):
            # vusb's magic opcode: the camera announces one more file (a late or paired file)
            cfg = cam.get_config()
            w = cfg.get_child_by_name("opcode")
            w.set_value("0x9999,0x0,0x1")
            cam.set_single_config("opcode", w)

        class Pair(gp.Camera):
            # like a RAW+JPEG camera: a second file is announced right after the capture
            def capture(self, *a):
                path = super().capture(*a)
                announce_extra_file(self)
                return path

        plain = GPhoto2Camera(settings={}, **FAST)
        vdir = VirtualCameraDir(frame_size=1 << 20); vdir.activate()
        vdir.put_frame(render())
        plain.open()
        announce_extra_file(plain._cam)      # a stray file from before this shot
        s = plain.trigger()
        out["plain_paths"] = s.info["paths"]
        plain.close()

        pair = GPhoto2Camera(camera_factory=Pair, event_timeout_ms=100, **FAST)
        pair.open()
        s = pair.trigger()
        files = pair.download(s)
        out["pair_paths"] = s.info["paths"]
        out["pair_files"] = [f.name for f in files]
        pair.close()
        """
    )
    assert len(out["plain_paths"]) == 1
    assert len(out["pair_paths"]) == 2 and len(set(out["pair_paths"])) == 2
    assert len(out["pair_files"]) == 2


def test_a_full_card_stops_the_run_and_out_of_memory_is_an_error() -> None:
    """A real camera's full card is recognised from what cameras report: libgphoto2's generic PTP capture
    turns PTP_RC_StoreFull into plain GP_ERROR and the storage info shows no free images. The virtual
    camera's "out of memory" after 26 captures per process is an error to the real driver, and a full
    store only to the simulated camera that knows it means that."""
    out = run_scenario(
        """
        import types
        full = {"shots": 0}

        class CardFills(gp.Camera):
            # the card is full after two photos: capture fails with GP_ERROR, no free images remain
            def capture(self, *a):
                full["shots"] += 1
                if full["shots"] > 2:
                    raise gp.GPhoto2Error(gp.GP_ERROR)
                return super().capture(*a)
            def get_storageinfo(self):
                return [types.SimpleNamespace(fields=s.fields, access=s.access, freekbytes=s.freekbytes,
                                              freeimages=0 if full["shots"] > 2 else s.freeimages)
                        for s in super().get_storageinfo()]

        vdir = VirtualCameraDir(frame_size=256 * 1024)  # one folder per process: libgphoto2 keeps the first
        cam = SimGPhoto2Camera(render, vcam_dir=vdir, camera_factory=CardFills, **FAST)
        cam.open()
        ok = 0
        try:
            for _ in range(5):
                s = cam.trigger()
                assert cam.download(s)[0].data == rendered[s.number - 1]
                ok += 1
        except CameraUnavailable as exc:
            out["card_full"] = str(exc)
        out["card_full_reconnects"] = cam.camera.reconnects
        cam.close()

        class OutOfMemory(gp.Camera):
            # libgphoto2 could not allocate memory during the capture (its C_MEM checks)
            def capture(self, *a):
                raise gp.GPhoto2Error(gp.GP_ERROR_NO_MEMORY)

        plain = GPhoto2Camera(camera_factory=OutOfMemory, **FAST)  # the real driver
        plain.open()
        try:
            plain.trigger()
        except CameraError as exc:
            out["plain"] = [type(exc).__name__, str(exc)]
        out["plain_reconnects"] = plain.reconnects
        plain.close()

        sim = SimGPhoto2Camera(render, vcam_dir=vdir, **FAST)  # the virtual camera's own 26 per process
        sim.open()
        try:
            for _ in range(40):
                s = sim.trigger()
                assert sim.download(s)[0].data == rendered[-1]
                ok += 1
        except CameraUnavailable as exc:
            out["sim"] = str(exc)
        out["ok"] = ok
        sim.close()
        vdir.cleanup()
        """
    )
    assert "cannot store more photos" in out["card_full"] and "\n" not in out["card_full"]
    assert out["card_full_reconnects"] == 0  # a full card is not a connection fault
    assert out["ok"] == 26  # 2 on the filling card, then the virtual camera's 24 others
    assert out["plain"][0] == "GPhoto2Failure" and "Out of memory" in out["plain"][1]
    assert "cannot store" not in out["plain"][1] and out["plain_reconnects"] == 0
    assert "virtual camera cannot store more photos" in out["sim"] and "\n" not in out["sim"]
