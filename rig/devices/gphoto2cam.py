"""Tethered camera through python-gphoto2.

One camera session for the whole run (a fresh init per shot costs more than the shot itself), with
the faults a long unattended run meets handled here so the engine only sees `CameraError` (retry the
capture) or `CameraUnavailable` (an operator must act):

- "I/O in progress" / camera busy: retried in the same session with exponential backoff;
- a lost connection (USB reset, cable, power): the session is closed, the *same* camera (model and
  serial, else port) is found again and initialised, the settings are re-applied and the capture is
  retaken;
- a full card (see STORE_FULL_CODES), or a camera still dead after `max_reconnects`:
  `CameraUnavailable`, one line;
- a request the camera refuses, or out of memory: `CameraError` (the engine retakes the capture).

Attribution: a shot owns exactly the files its own `capture()` returned plus the FILE_ADDED events
that arrived after it in the same session. Events queued before a capture are drained and dropped,
and a path already owned by another shot is never handed to a new one; a shot whose path was reused
by a later capture (e.g. in-RAM names restarting after a reconnect) cannot be downloaded any more.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import gphoto2 as gp

from rig.config import GPhoto2CameraConfig
from rig.devices import CameraFile, Shot
from rig.errors import CameraError, CameraUnavailable, ConfigError

if TYPE_CHECKING:
    from rig.devices.kinds import Opening

log = logging.getLogger(__name__)

T = TypeVar("T")

BUSY_CODES = frozenset({gp.GP_ERROR_CAMERA_BUSY})
# How a full card shows (libgphoto2 2.5, camlibs/ptp2/library.c): NO_SPACE where a camlib says so;
# the generic PTP capture turns PTP_RC_StoreFull (0x200C) into plain GP_ERROR ("PTP Store Full" goes
# to the context only); a Canon EOS release refused with "no more memory on card?" is NO_MEMORY. So
# apart from NO_SPACE, a failed capture asks the camera's storage info: no free images or space left
# means the card is full, whatever the code. Otherwise NO_MEMORY means what it says.
STORE_FULL_CODES = frozenset({gp.GP_ERROR_NO_SPACE})
# Errors a reconnect cannot fix: the request itself is wrong, the file is gone, or memory ran out.
HOPELESS_CODES = frozenset(
    {gp.GP_ERROR_NOT_SUPPORTED, gp.GP_ERROR_BAD_PARAMETERS, gp.GP_ERROR_FILE_NOT_FOUND,
     gp.GP_ERROR_DIRECTORY_NOT_FOUND, gp.GP_ERROR_PATH_NOT_ABSOLUTE, gp.GP_ERROR_NO_MEMORY}
)


class GPhoto2Failure(CameraError):
    """An operation libgphoto2 refused in a way a retry of the capture may get past; `code` says how."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def storage_full(cam: Any) -> bool:
    """Whether every storage the camera can photograph to reports no free images or no free space.

    A card is read-write, or read-only-with-delete for the host (the camera still writes it)."""
    try:
        stores = cam.get_storageinfo()
    except gp.GPhoto2Error:
        return False
    writable = [s for s in stores if not (s.fields & gp.GP_STORAGEINFO_ACCESS)
                or s.access != gp.GP_STORAGEINFO_AC_READONLY]
    if not writable:
        return False

    def full(s: Any) -> bool:
        if s.fields & gp.GP_STORAGEINFO_FREESPACEIMAGES and s.freeimages == 0:
            return True
        return bool(s.fields & gp.GP_STORAGEINFO_FREESPACEKBYTES and s.freekbytes == 0)

    return all(full(s) for s in writable)


@dataclass(frozen=True)
class _Identity:
    """What makes "the same camera" after a reconnect: ports can change on USB re-enumeration."""

    model: str
    port: str
    serial: str | None


def _autodetect() -> list[tuple[str, str]]:
    """(model, port) of every camera libgphoto2 sees now; none is an empty list, not an error."""
    try:
        found = gp.Camera.autodetect()
    except gp.GPhoto2Error as exc:  # e.g. no port library loadable: nothing attached
        log.debug("autodetect failed: %s", exc)
        return []
    return [(found.get_name(i), found.get_value(i)) for i in range(found.count())]


def _read_serial(cam: Any) -> str | None:
    """The camera's serial number, or None when it has none.

    Reads single widgets, not the whole tree: reading every property makes some cameras (and the
    virtual one) queue property-change events that slow every later operation down.
    """
    for name in ("serialnumber", "eosserialnumber"):
        try:
            value = str(cam.get_single_config(name).get_value()).strip()
        except gp.GPhoto2Error:
            continue
        if value:
            return value
    try:
        for line in str(cam.get_summary().text).splitlines():
            if line.strip().lower().startswith("serial number:"):
                return line.split(":", 1)[1].strip() or None
    except gp.GPhoto2Error:
        pass
    return None


def _init_camera(factory: Callable[[], Any], model: str, port: str) -> Any:
    """Initialise the camera of `model` on `port` (not whatever libgphoto2 finds first)."""
    cam = factory()
    abilities = gp.CameraAbilitiesList()
    abilities.load()
    idx = abilities.lookup_model(model)
    cam.set_abilities(abilities[idx])
    ports = gp.PortInfoList()
    ports.load()
    idx = ports.lookup_path(port)
    cam.set_port_info(ports[idx])
    cam.init()
    return cam


def _safe_exit(cam: Any) -> None:
    """Close a session that may already be dead; errors here are expected and irrelevant."""
    try:
        cam.exit()
    except gp.GPhoto2Error as exc:
        log.debug("camera exit failed (ignored): %s", exc)


def list_cameras(probe: bool = True) -> list[dict[str, str]]:
    """Attached cameras as dicts with model, port and (when `probe`) serial and summary.

    Probing opens a short session on each camera; do not probe a camera a run is using.
    """
    result: list[dict[str, str]] = []
    for model, port in _autodetect():
        entry = {"model": model, "port": port}
        if probe:
            try:
                cam = _init_camera(gp.Camera, model, port)
            except gp.GPhoto2Error as exc:
                entry["error"] = str(exc)
            else:
                try:
                    entry["serial"] = _read_serial(cam) or ""
                    entry["summary"] = str(cam.get_summary().text).split("\n\n", 1)[0].strip()
                except gp.GPhoto2Error as exc:
                    entry["error"] = str(exc)
                finally:
                    _safe_exit(cam)
        result.append(entry)
    return result


# ---------------------------------------------------------------------------------- settings


def _leaf_widgets(widget: Any) -> list[Any]:
    """All settable leaves of a config tree (sections and windows are only containers)."""
    kind = widget.get_type()
    if kind in (gp.GP_WIDGET_WINDOW, gp.GP_WIDGET_SECTION):
        return [leaf for i in range(widget.count_children())
                for leaf in _leaf_widgets(widget.get_child(i))]
    return [widget]


def _choices(widget: Any) -> list[str]:
    return [str(widget.get_choice(i)) for i in range(widget.count_choices())]


def _coerce_value(widget: Any, name: str, value: str) -> Any:
    """The value to give `widget.set_value`, or ConfigError naming what the camera offers."""
    kind = widget.get_type()
    if kind in (gp.GP_WIDGET_RADIO, gp.GP_WIDGET_MENU):
        choices = _choices(widget)
        if value in choices:
            return value
        folded = [c for c in choices if c.lower() == value.lower()]
        if len(folded) == 1:
            return folded[0]
        raise ConfigError(
            f"camera setting {name!r}: {value!r} is not offered; choose one of: {', '.join(choices)}")
    if kind == gp.GP_WIDGET_TOGGLE:
        table = {"1": 1, "on": 1, "true": 1, "yes": 1, "0": 0, "off": 0, "false": 0, "no": 0}
        if value.lower() not in table:
            raise ConfigError(f"camera setting {name!r}: {value!r} is not offered; choose one of: on, off")
        return table[value.lower()]
    if kind == gp.GP_WIDGET_RANGE:
        low, high, step = widget.get_range()
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not low <= number <= high:
            raise ConfigError(
                f"camera setting {name!r}: {value!r} is not offered; choose a number from {low:g} to {high:g} "
                f"(step {step:g})")
        return number
    if kind == gp.GP_WIDGET_DATE:
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"camera setting {name!r}: {value!r} is not offered; give seconds since 1970") from None
    if kind == gp.GP_WIDGET_TEXT:
        return value
    raise ConfigError(f"camera setting {name!r} is an action, not a setting; remove it from the settings")


def _apply_settings(cam: Any, settings: Mapping[str, str], model: str) -> None:
    """Validate every setting against the camera's widgets, then write those that differ."""
    planned: list[tuple[str, Any, Any]] = []
    for name, raw in settings.items():
        try:
            widget = cam.get_single_config(name)
        except gp.GPhoto2Error:
            writable = sorted({w.get_name() for w in _leaf_widgets(cam.get_config())
                               if not w.get_readonly() and w.get_type() != gp.GP_WIDGET_BUTTON})
            raise ConfigError(f"camera setting {name!r} does not exist on {model}; "
                              f"choose one of: {', '.join(writable)}") from None
        if widget.get_readonly():
            raise ConfigError(f"camera setting {name!r} is read-only on {model}; remove it from the settings")
        planned.append((name, widget, _coerce_value(widget, name, str(raw))))
    for name, widget, value in planned:
        if widget.get_value() == value:
            log.info("camera setting %s = %r (already)", name, value)
            continue
        widget.set_value(value)
        try:
            cam.set_single_config(name, widget)
        except gp.GPhoto2Error as exc:
            raise ConfigError(f"camera setting {name!r}: {model} refused {value!r} ({exc}); "
                              f"check the camera's mode dial or remove the setting") from None
        log.info("camera setting %s = %r", name, value)


# ---------------------------------------------------------------------------------- driver


class GPhoto2Camera:
    """A Camera over one persistent libgphoto2 session, safe to download from another thread."""

    def __init__(
        self,
        model: str | None = None,
        port: str | None = None,
        serial: str | None = None,
        settings: Mapping[str, str] | None = None,
        keep_on_camera: bool = False,
        busy_retries: int = 6,
        busy_backoff_s: float = 0.05,
        max_reconnects: int = 5,
        reconnect_backoff_s: float = 0.5,
        reconnect_backoff_max_s: float = 5.0,
        event_timeout_ms: int = 20,
        event_drain_max_s: float = 2.0,
        camera_factory: Callable[[], Any] = gp.Camera,
        reopen_after_settings: bool = False,
    ) -> None:
        self.model, self.port, self.serial = model, port, serial
        self.settings = dict(settings or {})
        self.keep_on_camera = keep_on_camera
        self.busy_retries, self.busy_backoff_s = busy_retries, busy_backoff_s
        self.max_reconnects = max_reconnects
        self.reconnect_backoff_s, self.reconnect_backoff_max_s = reconnect_backoff_s, reconnect_backoff_max_s
        self.event_timeout_ms, self.event_drain_max_s = event_timeout_ms, event_drain_max_s
        # Start a clean session once settings are written: reading properties makes some cameras
        # (libgphoto2's virtual one: ~300 ms per shot) queue property events for the whole session.
        self.reopen_after_settings = reopen_after_settings
        self._factory = camera_factory  # a hook for fault injection in tests (a gp.Camera subclass)
        self._lock = threading.RLock()  # libgphoto2 sessions are not thread-safe
        self._cam: Any = None
        self._lost = False  # the session died; the next operation must reconnect first
        self._identity: _Identity | None = None
        self._session = 0  # bumped on every (re)initialisation
        self._numbers = itertools.count(1)
        self._owner: dict[str, int] = {}  # camera path -> shot number that owns it (not yet deleted)
        self._token = uuid.uuid4().hex  # ties a Shot to this driver instance
        self.reconnects = 0  # total over the run, for status and tests

    # -- lifecycle --------------------------------------------------------------------------

    def open(self) -> None:
        """Find the configured camera, start the run's one session and apply the settings."""
        with self._lock:
            if self._cam is not None:
                return
            model, port = self._select()
            self._cam = self._start_session(model, port)
            log.info("camera %s on %s (serial %s) open", model, port, self._identity.serial if self._identity else None)

    def close(self) -> None:
        """End the session; files not yet downloaded stay on the camera."""
        with self._lock:
            if self._cam is not None:
                _safe_exit(self._cam)
            self._cam, self._lost = None, False

    def __enter__(self) -> GPhoto2Camera:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def identity(self) -> dict[str, str | None]:
        """Model, port and serial of the open camera (for logs and the run store)."""
        i = self._identity
        return {"model": i.model, "port": i.port, "serial": i.serial} if i else {}

    def _select(self) -> tuple[str, str]:
        """The (model, port) to open, from the configured model/port and what is attached."""
        found = _autodetect()
        if not found:
            raise CameraUnavailable("no camera found by libgphoto2; connect and switch on the camera "
                                    "(and close other programs using it), then retry")
        matches = [(m, p) for m, p in found
                   if (self.model is None or m == self.model) and (self.port is None or p == self.port)]
        listing = "; ".join(f"{m} on {p}" for m, p in found)
        if not matches:
            raise CameraUnavailable(f"no camera matches model={self.model!r} port={self.port!r}; "
                                    f"attached: {listing}")
        if len(matches) > 1 and self.serial is None:
            raise ConfigError(f"{len(matches)} cameras match; set the camera model and/or port "
                              f"(attached: {listing})")
        return matches[0] if len(matches) == 1 else self._pick_by_serial(matches)

    def _pick_by_serial(self, matches: list[tuple[str, str]]) -> tuple[str, str]:
        for model, port in matches:
            cam = _init_camera(self._factory, model, port)
            try:
                if _read_serial(cam) == self.serial:
                    return model, port
            finally:
                _safe_exit(cam)
        raise CameraUnavailable(f"no attached camera has serial {self.serial!r}")

    def _start_session(self, model: str, port: str) -> Any:
        """Init the camera and apply the settings; the same at open and after a reconnect."""
        cam = self._init_checked(model, port)
        try:
            _apply_settings(cam, self.settings, model)
        except BaseException:  # any end, Ctrl-C included: leave the camera usable; re-raised
            _safe_exit(cam)
            raise
        if self.settings and self.reopen_after_settings:
            _safe_exit(cam)  # a new object: re-init of an exited gp.Camera can crash libgphoto2
            cam = self._init_checked(model, port)
        return cam

    def _init_checked(self, model: str, port: str) -> Any:
        """Init on (model, port) and make sure it is the camera this run started with."""
        try:
            cam = _init_camera(self._factory, model, port)
        except gp.GPhoto2Error as exc:
            raise CameraUnavailable(f"camera {model} on {port} did not start a session ({exc}); "
                                    f"switch it off and on, then retry") from None
        serial = _read_serial(cam)
        wanted = self._identity.serial if self._identity else self.serial
        if wanted is not None and serial is not None and serial != wanted:
            _safe_exit(cam)
            raise CameraUnavailable(f"camera on {port} has serial {serial}, expected {wanted}")
        self._identity = _Identity(model, port, serial)
        self._session += 1
        return cam

    # -- fault handling ---------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._cam is None and not self._lost:
            raise CameraError("camera is not open; call open() first")

    def _fail_reconnect(self, name: str, what: str, why: object, attempts: int) -> CameraUnavailable:
        return CameraUnavailable(
            f"{name} stopped answering ({what}: {why}) and {attempts} reconnects did not help; "
            f"check its cable and power, then resume the run")

    def _run(self, what: str, op: Callable[[Any], T]) -> T:
        """Run `op(camera)`: busy -> backoff, lost -> reconnect and run again, store full -> stop."""
        self._require_open()
        busy = 0
        reconnects = 0
        last: object = "connection lost earlier"
        name = self._identity.model if self._identity else "camera"
        while True:
            if self._lost:
                if reconnects >= self.max_reconnects:
                    raise self._fail_reconnect(name, what, last, reconnects)
                reconnects += 1
                self._reconnect(reconnects)
                busy = 0
                continue
            try:
                return op(self._cam)
            except gp.GPhoto2Error as exc:
                code, last = exc.code, exc
                if code in STORE_FULL_CODES or (code not in BUSY_CODES and storage_full(self._cam)):
                    raise CameraUnavailable(
                        f"{name} cannot store more photos ({what}: {exc}); empty the card or "
                        f"download and delete its files, then resume the run") from None
                if code in HOPELESS_CODES:
                    raise GPhoto2Failure(f"{name}: {what} failed ({exc})", code) from None
                if code in BUSY_CODES and busy < self.busy_retries:
                    delay = self.busy_backoff_s * 2 ** busy
                    busy += 1
                    log.warning("%s: %s busy (%s); retry %d in %.2f s", name, what, exc, busy, delay)
                    time.sleep(delay)
                    continue
                log.warning("%s: %s failed (%s); reconnecting", name, what, exc)
                self._mark_lost()

    def _mark_lost(self) -> None:
        """Drop the session; the next operation reconnects (never let libgphoto2 re-init silently)."""
        if self._cam is not None:
            _safe_exit(self._cam)
        self._cam = None
        self._lost = True

    def _reconnect(self, attempt: int) -> None:
        """After a backoff, find the same camera again, init it and re-apply the settings."""
        assert self._identity is not None
        ident = self._identity
        delay = min(self.reconnect_backoff_s * 2 ** (attempt - 1), self.reconnect_backoff_max_s)
        time.sleep(delay)
        self.reconnects += 1
        for model, port in _autodetect():
            if model != ident.model:
                continue
            if ident.serial is None and port != ident.port:
                continue  # no serial: the port is all that identifies it
            try:
                cam = self._start_session(model, port)
            except (CameraUnavailable, ConfigError, gp.GPhoto2Error) as exc:
                log.warning("reconnect attempt %d: %s", attempt, exc)
                continue
            self._cam, self._lost = cam, False
            log.info("reconnected to %s on %s (session %d)", model, port, self._session)
            return
        log.warning("reconnect attempt %d: %s (serial %s) not found", attempt, ident.model, ident.serial)

    # -- capture ----------------------------------------------------------------------------

    def _drain(self, cam: Any) -> list[str]:
        """Read queued events until the camera has none; return the paths of files it added."""
        added: list[str] = []
        deadline = time.monotonic() + self.event_drain_max_s
        while time.monotonic() < deadline:
            kind, data = cam.wait_for_event(self.event_timeout_ms)
            if kind == gp.GP_EVENT_TIMEOUT:
                break
            if kind == gp.GP_EVENT_FILE_ADDED:
                added.append(f"{data.folder.rstrip('/')}/{data.name}")
            elif kind == gp.GP_EVENT_CAPTURE_COMPLETE:
                continue
        return added

    def _capture_once(self, cam: Any) -> list[str]:
        """One exposure: drop stale events, capture, collect this shot's files (RAW+JPEG)."""
        stale = self._drain(cam)
        if stale:
            log.warning("ignoring %d file(s) the camera added before this capture: %s", len(stale), stale)
        path = cam.capture(gp.GP_CAPTURE_IMAGE)
        files = [f"{path.folder.rstrip('/')}/{path.name}"]
        for extra in self._drain(cam):
            if extra not in files:
                files.append(extra)
        return files

    def trigger(self) -> Shot:
        """Expose one photo; returns with the shot's camera paths once the camera reports them."""
        with self._lock:
            paths = self._run("capture", self._capture_once)
            number = next(self._numbers)
            own: list[str] = []
            for p in paths:
                previous = self._owner.get(p)
                if previous is not None:
                    log.warning("camera reused %s (was shot %d); shot %d can no longer be downloaded",
                                p, previous, previous)
                self._owner[p] = number
                own.append(p)
            log.debug("shot %d: %s", number, own)
            return Shot(number, {"paths": own, "session": self._session, "camera": self._token,
                                 **{k: v for k, v in self.identity.items()}})

    # -- download ---------------------------------------------------------------------------

    def _check_owner(self, shot: Shot, path: str) -> None:
        if shot.info.get("camera") != self._token:
            raise CameraError(f"shot {shot.number} was not taken by this camera session")
        if self._owner.get(path) != shot.number:
            raise CameraError(f"shot {shot.number}: {path} is no longer this shot's file "
                              f"(downloaded already, or reused by the camera after a reconnect); retake it")

    def _get(self, path: str) -> Callable[[Any], bytes]:
        folder, name = path.rsplit("/", 1)

        def op(cam: Any) -> bytes:
            cfile = cam.file_get(folder or "/", name, gp.GP_FILE_TYPE_NORMAL)
            data = bytes(cfile.get_data_and_size())  # copy while cfile keeps the buffer alive
            del cfile
            return data

        return op

    def _delete(self, path: str) -> Callable[[Any], None]:
        folder, name = path.rsplit("/", 1)
        return lambda cam: cam.file_delete(folder or "/", name)

    def download(self, shot: Shot) -> Sequence[CameraFile]:
        """The shot's files byte for byte; deleted from the camera afterwards unless keep_on_camera."""
        listed = shot.info.get("paths")  # a list[str] in every Shot this driver made (trigger)
        paths = [str(p) for p in listed] if isinstance(listed, list) else []
        if not paths:
            raise CameraError(f"shot {shot.number} has no camera files")
        with self._lock:
            files: list[CameraFile] = []
            for path in paths:
                self._check_owner(shot, path)
                data = self._run(f"download {path}", self._get(path))
                files.append(CameraFile(path.rsplit("/", 1)[1], data))
            for path in paths:
                if not self.keep_on_camera:
                    try:
                        self._run(f"delete {path}", self._delete(path))
                    except CameraError as exc:  # the photo is safe; a full card will say so later
                        log.warning("could not delete %s from the camera: %s", path, exc)
                self._owner.pop(path, None)
            return files


def open_camera(opening: Opening) -> GPhoto2Camera:
    """`kind: gphoto2` (rig/devices/kinds.py): the tethered camera the rig file selects."""
    c = opening.rig.camera
    assert isinstance(c, GPhoto2CameraConfig)
    return GPhoto2Camera(model=c.model, port=c.port, serial=c.serial, settings=c.settings,
                         keep_on_camera=c.keep_on_camera)
