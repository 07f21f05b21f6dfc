"""The simulated rig's side of libgphoto2's virtual camera.

python-gphoto2 wheels ship a virtual USB port library (`gphoto2/libgphoto2/vusb`). With `IOLIBS`
pointing there and `VCAMERADIR` at a folder holding one JPEG, libgphoto2's real PTP driver talks to
a virtual camera whose captures return that JPEG. The folder (file list *and sizes*) is read at each
camera init, so every frame we write must have exactly the size the file had then: frames are
padded with zeros after their EOI marker. `SimGPhoto2Camera` renders a frame per trigger, puts it
there and drives the real `GPhoto2Camera`; only it strips the padding (a sim artefact), and only it
reads the virtual camera's "out of memory" after ~26 captures in one process as a full store (a
real camera's full card is recognised by the driver from what real cameras report).
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gphoto2 as gp

from rig.config import SimGPhoto2CameraConfig
from rig.devices import CameraFile, Shot
from rig.devices.gphoto2cam import GPhoto2Camera, GPhoto2Failure
from rig.devices.kinds import Opening
from rig.errors import CameraError, CameraUnavailable
from rig.sim.world import photographed

log = logging.getLogger(__name__)

DEFAULT_FRAME_SIZE = 8 * 1024 * 1024
SOI, EOI = b"\xff\xd8", b"\xff\xd9"
# Only there so the file exists, with its fixed size, when the camera is initialised.
_PLACEHOLDER = SOI + EOI


def vusb_dir() -> Path:
    """The wheel's virtual USB port library folder (globbed: its layout has carried versions)."""
    import gphoto2

    base = Path(gphoto2.__file__).resolve().parent
    hits = sorted(glob.glob(str(base / "**" / "vusb"), recursive=True))
    hits = [h for h in hits if Path(h).is_dir() and list(Path(h).glob("*.so*"))]
    if not hits:
        raise RuntimeError(f"no libgphoto2 'vusb' port library under {base}; "
                           "the installed python-gphoto2 wheel does not ship the virtual camera")
    return Path(hits[0])


def strip_padding(data: bytes) -> bytes:
    """The JPEG without the zero padding `put_frame` added after its EOI marker."""
    jpeg = data.rstrip(b"\0")
    if not (jpeg.startswith(SOI) and jpeg.endswith(EOI)):
        raise CameraError("virtual camera returned a file that is not a padded JPEG")
    return jpeg


class VirtualCameraDir:
    """A VCAMERADIR holding one fixed-size, zero-padded JPEG that each capture returns."""

    FILE_NAME = "frame.jpg"

    def __init__(self, frame_size: int = DEFAULT_FRAME_SIZE, root: str | os.PathLike[str] | None = None) -> None:
        self.frame_size = frame_size
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="rig-vcam-")) if root is None else Path(root)
        self.dir = self.root / "vcameradir"  # what VCAMERADIR points at: only the frame lives here
        self._tmp = self.root / "staging"  # same filesystem, outside the camera's folder
        self._unplugged = self.root / "no-camera-iolibs"
        for d in (self.dir, self._tmp, self._unplugged):
            d.mkdir(parents=True, exist_ok=True)
        self.frame = self.dir / self.FILE_NAME
        self._hidden = self._tmp / "unplugged.jpg"
        self._is_unplugged = False
        self._lock = threading.Lock()
        self.put_frame(_PLACEHOLDER)

    def env(self) -> dict[str, str]:
        """The environment libgphoto2 needs to see this folder as an attached camera."""
        return {"IOLIBS": str(vusb_dir()), "VCAMERADIR": str(self.dir)}

    def activate(self) -> None:
        """Set IOLIBS/VCAMERADIR in os.environ; must happen before the camera is initialised."""
        os.environ.update(self.env())
        log.debug("virtual camera: %s", self.env())

    def put_frame(self, jpeg: bytes) -> None:
        """Make the next capture return `jpeg`: pad to the fixed size, replace the file atomically."""
        if not (jpeg.startswith(SOI) and jpeg.endswith(EOI)):
            raise ValueError("put_frame needs a complete JPEG (starts with SOI, ends with EOI)")
        if len(jpeg) > self.frame_size:
            raise ValueError(f"frame of {len(jpeg)} bytes exceeds the virtual camera's fixed size "
                             f"{self.frame_size}; raise frame_size (fixed at camera init)")
        with self._lock:
            fd, tmp = tempfile.mkstemp(dir=self._tmp, suffix=".part")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(jpeg)
                    fh.truncate(self.frame_size)  # zero padding, sparse where the fs allows
                # while unplugged the frame waits outside, for the camera's return
                os.replace(tmp, self._hidden if self._is_unplugged else self.frame)
            except BaseException:  # any end: no temp frame left behind; re-raised
                Path(tmp).unlink(missing_ok=True)
                raise

    def unplug(self) -> None:
        """Simulate pulling the cable: the open session fails, autodetect finds no camera."""
        with self._lock:
            if self._is_unplugged:
                return
            os.replace(self.frame, self._hidden)
            self._is_unplugged = True
            os.environ["IOLIBS"] = str(self._unplugged)
            serial = sorted(glob.glob(str(vusb_dir().parent / "iolibs" / "serial.so*")))
            link = self._unplugged / "serial.so"
            if serial and not link.exists():  # a port library that finds no camera
                link.symlink_to(serial[0])

    def replug(self) -> None:
        """Undo `unplug`: the camera is back on its port with the same frame."""
        with self._lock:
            if not self._is_unplugged:
                return
            os.replace(self._hidden, self.frame)
            self._is_unplugged = False
            os.environ["IOLIBS"] = str(vusb_dir())

    def cleanup(self) -> None:
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> VirtualCameraDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class SimGPhoto2Camera:
    """A Camera photographing the simulated studio through libgphoto2's real PTP stack.

    The virtual camera reads the frame file at download time, so a shot not yet downloaded when
    the next frame is put would return the wrong picture: such shots are fetched (through the same
    PTP stack) before the next frame replaces the file.
    """

    def __init__(
        self,
        render: Callable[[], bytes],
        frame_size: int = DEFAULT_FRAME_SIZE,
        vcam_dir: VirtualCameraDir | None = None,
        **gphoto2_options: Any,
    ) -> None:
        self.render = render
        self.vdir = vcam_dir
        self._own_dir = vcam_dir is None
        self.frame_size = vcam_dir.frame_size if vcam_dir else frame_size
        # the virtual camera floods a session whose properties were read with events: start clean
        gphoto2_options.setdefault("reopen_after_settings", True)
        self.camera = GPhoto2Camera(**gphoto2_options)
        self._lock = threading.RLock()
        self._pending: dict[int, Shot] = {}  # triggered, not yet fetched
        self._fetched: dict[int, list[CameraFile]] = {}
        self._sha: dict[int, str] = {}

    def open(self) -> None:
        if self.vdir is None:
            self.vdir = VirtualCameraDir(self.frame_size)
        self.vdir.activate()
        self.camera.open()

    def close(self) -> None:
        self.camera.close()
        if self._own_dir and self.vdir is not None:
            self.vdir.cleanup()
            self.vdir = None

    def trigger(self) -> Shot:
        """Render what the display shows now, expose it through the virtual camera."""
        jpeg = self.render()
        with self._lock:
            for shot in list(self._pending.values()):  # the file is about to change under them
                self._fetched[shot.number] = self._fetch(shot)
            assert self.vdir is not None, "open() first"
            self.vdir.put_frame(jpeg)
            try:
                shot = self.camera.trigger()
            except GPhoto2Failure as e:
                if e.code == gp.GP_ERROR_NO_MEMORY:  # the virtual camera's way of saying its store is full
                    raise CameraUnavailable(f"virtual camera cannot store more photos ({e}); start a new "
                                            "process (it counts its captures per process), then resume") from None
                raise
            self._pending[shot.number] = shot
            self._sha[shot.number] = hashlib.sha256(jpeg).hexdigest()
            return shot

    def _fetch(self, shot: Shot) -> list[CameraFile]:
        files = [CameraFile(f.name, strip_padding(f.data)) for f in self.camera.download(shot)]
        del self._pending[shot.number]
        got = hashlib.sha256(files[0].data).hexdigest()
        if got != self._sha.pop(shot.number):
            raise CameraError(f"shot {shot.number}: the virtual camera returned another frame; retake it")
        return files

    def download(self, shot: Shot) -> Sequence[CameraFile]:
        """The exact JPEG that was rendered for this shot."""
        with self._lock:
            if shot.number in self._fetched:
                return self._fetched.pop(shot.number)
            if shot.number not in self._pending:
                raise CameraError(f"shot {shot.number} is unknown or already downloaded")
            return self._fetch(shot)


def open_camera(opening: Opening) -> SimGPhoto2Camera:
    """`kind: sim-gphoto2` (rig/devices/kinds.py): the studio's photo through the virtual USB camera."""
    from rig.sim.camera import studio
    from rig.sim.studio import Scene

    config = opening.rig.camera
    assert isinstance(config, SimGPhoto2CameraConfig)
    physical, screen = photographed(opening)
    made = studio(opening)

    def render() -> bytes:  # what the camera sees at the trigger
        pulses, lights = physical()
        return made.jpeg(Scene(screen(), pulses, lights))

    return SimGPhoto2Camera(render, settings=config.settings, keep_on_camera=config.keep_on_camera)
