"""Export a run as a data set a CheXpert user can load: photos in the CheXpert tree plus captures.csv
and a dataset card (README.md) that says how it was made.

Photos come in one of three forms (`--photos`): `masked` (the default: the photo as shot with
everything outside the x-ray's quadrilateral black, so no fiducial marker shows), `full` (the
camera's own files) or `registered` (the x-ray area rectified to the source image's pixel grid).

The export is built in a sibling folder `.<out>.partial` and swapped into place with renames, so a
kill at any moment leaves either the previous export or the new one under the requested name, and
the next export cleans up whatever the kill left (see `_recover`). `export.json` in the export says
which run it came from and how complete the run was, so a later export never silently replaces the
data set of another run.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import errno
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import jinja2
import numpy as np

import rig
from rig.calibration import file as calibration
from rig.calibration.angles import pulse_to_angle
from rig.command import rig_command
from rig.errors import ConfigError, RigError
from rig.files import fsync_dir
from rig.merge import check_mergeable
from rig.session import Session
from rig.store import Counts, RunStore

INFO = "export.json"
CARD = "README.md"
PHOTO_FORMS = ("masked", "full", "registered")
DEFAULT_PHOTOS = "masked"
# After the CheXpert-style columns (Path, Study, Source, the labels) and the run's own (Condition ...
# Registered), unchanged: the capture facts.
FACT_COLUMNS = ["Pose", "Lighting", "Pulses", "PanDeg", "TiltDeg", "Lights", "CapturedAt", "Sharpness", "Margin",
                "Clipped", "FrameId", "Rig", "Calibration"]


class ExportRefused(RigError):
    """`--out` holds something this export must not replace."""


class MissingPhoto(RigError):
    """A file the run store lists as accepted is gone or was changed on disk."""


@dataclass(frozen=True)
class Exported:
    photos: int
    counts: Counts  # the run's state when it was exported (the same snapshot as the photos)


def export(store: RunStore, out: Path, session: Session, replace: bool = False,
           photos: str = DEFAULT_PHOTOS, merge: Sequence[tuple[Session, RunStore]] = ()) -> Exported:
    """Write every accepted capture under `out` (replacing an earlier export of this run).

    `merge`: the runs of the other shards of the same session (rig/shard.py), exported with this one
    as one data set, laid out as if one run had taken every photo; refused (nothing written) unless
    they are shards of one plan (rig/merge.py)."""
    if photos not in PHOTO_FORMS:
        raise ConfigError(f"--photos {photos}: choose one of {', '.join(PHOTO_FORMS)}")
    runs = [(session, store), *merge]
    if merge:
        check_mergeable(runs)
    stores = [s for _, s in runs]
    out = out.resolve()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot create it ({e.strerror}); choose a writable place") from None
    with _locked(out.parent):
        try:
            _recover(out)
        except OSError as e:
            raise ConfigError(f"--out {out}: cannot clean up after an interrupted export ({e.strerror}: "
                              f"{e.filename}); fix that, or remove it, then export again") from None
        _check_replace(stores, out, replace)
        partial = _sibling(out, "partial")
        try:
            partial.mkdir()
        except OSError as e:
            raise ConfigError(f"--out {out}: cannot create it ({e.strerror}); choose a writable place") from None
        try:
            with ExitStack() as snapshots:
                for s in stores:  # one snapshot per run: the counts describe exactly the photos exported
                    s.db.execute("BEGIN")
                    snapshots.callback(s.db.execute, "COMMIT")
                counts = _sum_counts([s.counts() for s in stores])
                facts = [(s, _Facts(sess, s)) for sess, s in runs]
                written = _write(facts, partial, json.loads(store.meta("label_columns") or "[]"), photos)
                _write_info(stores, partial, counts, written)
                _write_card(stores, session, partial, counts, written, photos, facts[0][1])
        except BaseException as e:
            shutil.rmtree(partial, ignore_errors=True)
            if isinstance(e, OSError):
                what = "free space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "check that place"
                raise ConfigError(f"--out {out}: export failed ({e.strerror or e}"
                                  f"{': ' + str(e.filename) if e.filename else ''}); nothing was replaced; "
                                  f"{what} or choose another --out") from None
            raise
        try:
            _swap(partial, out)
        except OSError as e:
            raise ConfigError(f"--out {out}: cannot put the export in place ({e.strerror}: {e.filename}); "
                              "fix that, then export again") from None
    return Exported(written, counts)


def _sum_counts(counts: list[Counts]) -> Counts:
    return Counts(*(sum(getattr(c, f.name) for c in counts) for f in fields(Counts)))


def _sibling(out: Path, kind: str) -> Path:
    return out.with_name(f".{out.name}.{kind}")


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One export at a time per parent folder (the kernel drops the lock if the process dies)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as e:
        raise ConfigError(f"--out: cannot open {folder} ({e.strerror}); choose a place you can write") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportRefused(f"{folder}: another 'rig export' is writing here; wait for it") from None
        yield
    finally:
        os.close(fd)


def _swap(partial: Path, out: Path) -> None:
    """partial -> out; the previous export goes to `.old`, then to `.trash`, and is removed last.

    Only `.trash` is ever removed file by file, so a kill never leaves a half-removed folder under a
    name recovery would put back.
    """
    old, trash = _sibling(out, "old"), _sibling(out, "trash")
    if out.exists():
        os.replace(out, old)
    os.replace(partial, out)
    fsync_dir(out.parent)
    if old.exists():
        os.replace(old, trash)
        shutil.rmtree(trash, ignore_errors=True)  # what a failure leaves, the next export removes


def _recover(out: Path) -> None:
    """Finish or undo what a killed export left beside `out`.

    `.partial` is always incomplete or unused: removed. `.old` without `out` means the kill fell
    between the two renames of `_swap`: `.old` is the previous complete export and goes back. `.old`
    beside `out` and any `.trash` are leftovers of a finished swap: removed.
    """
    partial, old, trash = _sibling(out, "partial"), _sibling(out, "old"), _sibling(out, "trash")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(trash, ignore_errors=True)
    if old.exists() and not out.exists():
        os.replace(old, out)
    if old.exists() and not trash.exists():
        os.replace(old, trash)
        shutil.rmtree(trash, ignore_errors=True)
    fsync_dir(out.parent)
    for leftover in (partial, old, trash):
        if leftover.exists():
            raise ConfigError(f"{leftover}: left by an interrupted export and cannot be removed; "
                              "remove it, then export again")


def _check_replace(stores: list[RunStore], out: Path, replace: bool) -> None:
    """An existing `out` must be an export of these same runs (or of some of them: a merge that now
    takes more shards), unless the operator said --replace."""
    if not out.exists():
        return
    if not (out / "captures.csv").is_file():
        raise ConfigError(f"{out}: exists and is not a rig export; choose another --out or remove it")
    if replace:
        return
    try:
        info = json.loads((out / INFO).read_text())
        runs = info.get("merged", [info])
        theirs = {str(r["run_created"]) for r in runs}
        session = info.get("session", "?")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise ExportRefused(f"--out {out}: holds an export that does not say which run it came from; "
                            "pass --replace to overwrite it, or choose another --out") from None
    ours = {str(s.meta("created")) for s in stores}
    if theirs <= ours:
        return
    if len(runs) > 1 and ours <= theirs:  # one shard exported onto the merge it belongs to
        sessions = ", ".join(str(r.get("session", "?")) for r in runs)
        raise ExportRefused(f"--out {out}: holds the merge of {len(runs)} runs ({sessions}), of which this is only "
                            "a part; export them all with --merge, pass --replace to overwrite it with this part, "
                            "or choose another --out")
    raise ExportRefused(f"--out {out}: holds the export of another run (session {session}); "
                        "pass --replace to overwrite it, or choose another --out")


def _run_info(store: RunStore, counts: Counts) -> dict[str, object]:
    return {"session": store.meta("session"), "run": str(store.root), "run_created": store.meta("created"),
            "planned": counts.planned, "done": counts.done, "failed": counts.failed, "pending": counts.pending}


def _write_info(stores: list[RunStore], partial: Path, counts: Counts, photos: int) -> None:
    """export.json: the (first) run, the totals, and for a merge every shard's run."""
    info: dict[str, object] = {**_run_info(stores[0], counts),
                               "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "photos": photos,
                               "complete": counts.done == counts.planned}
    if len(stores) > 1:
        info["merged"] = [_run_info(s, s.counts()) for s in stores]
    with open(partial / INFO, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


class _Facts:
    """What the CSV says about the rig and its calibration: as recorded when each photo's run started
    (a later recalibration does not rewrite earlier photos); the card describes the rig file now."""

    def __init__(self, session: Session, store: RunStore) -> None:
        self.rig = session.rig
        self.calibration, self.calibration_name = calibration.in_force(session.rig, session.rig_path)
        self.contexts = sorted(store.contexts(), key=lambda c: float(c["at"]))
        self._at = [float(c["at"]) for c in self.contexts]

    def _context(self, taken_at: float) -> dict[str, Any] | None:
        """The newest context recorded before the photo was taken; None for a run made before contexts were kept."""
        i = bisect.bisect_right(self._at, taken_at)
        return self.contexts[i - 1] if i else (self.contexts[0] if self.contexts else None)

    def _roles(self, ctx: dict[str, Any] | None) -> dict[str, str]:
        """Which servos were the camera's pan and tilt: as recorded when the run started; for a run
        recorded before roles were declared, the rig's roles now (none: no angles)."""
        if ctx and ctx.get("roles"):
            return dict(ctx["roles"])
        return {"pan": self.rig.roles.pan, "tilt": self.rig.roles.tilt} if self.rig.roles else {}

    def row(self, c: dict[str, object]) -> list[object]:
        readback = json.loads(str(c["readback"] or "{}"))
        qa = json.loads(str(c["qa"] or "{}"))
        positions = readback.get("positions") or []
        levels = readback.get("lights") or []
        commanded = {int(k): v for k, v in json.loads(str(c["commanded"] or "{}")).items()}
        commanded_lights = {int(k): v for k, v in json.loads(str(c["lights"] or "{}")).items()}
        ctx = self._context(float(str(c["started_at"])))
        servos = ctx["servos"] if ctx else {n: s.channel for n, s in self.rig.servos.items()}
        light_channels = ctx["lights"] if ctx else {n: lt.channel for n, lt in self.rig.lights.items()}
        pulses = {name: positions[ch] if ch < len(positions) else commanded.get(ch)
                  for name, ch in servos.items()}
        lights = {name: levels[ch] if ch < len(levels) else commanded_lights.get(ch)
                  for name, ch in light_channels.items()}
        angles = ctx["angles"] if ctx else {}
        roles = self._roles(ctx)

        def angle(role: str) -> str:
            servo = roles.get(role, "")
            coeffs, pulse = angles.get(servo), pulses.get(servo)
            return "" if coeffs is None or pulse is None else f"{pulse_to_angle(coeffs, pulse):.3f}"
        at = dt.datetime.fromtimestamp(float(str(c["started_at"])), dt.UTC)  # a REAL column
        return [c["pose"], c["lighting"], json.dumps(pulses), angle("pan"), angle("tilt"),
                json.dumps(lights), at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                _blank(qa.get("sharpness")), _blank(qa.get("margin_px")), _blank(qa.get("clipped")),
                _blank(c["frame_id"]), ctx["rig"] if ctx else self.rig.name, ctx["calibration"] if ctx else ""]


def _blank(value: object) -> object:
    return "" if value is None else value


def _accepted(runs: list[tuple[RunStore, _Facts]]) -> Iterator[tuple[RunStore, _Facts, dict[str, object]]]:
    """Every run's accepted captures, run after run, each with its run and what describes its rig."""
    for store, facts in runs:
        for c in store.accepted_captures():
            yield store, facts, c


def _write(runs: list[tuple[RunStore, _Facts]], partial: Path, label_columns: list[str], form: str) -> int:
    count = 0
    with open(partial / "captures.csv", "w", newline="", encoding="utf-8") as f, \
            ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="rig-mask") as pool:
        writer = csv.writer(f)
        writer.writerow(["Path", "Study", "Source", *label_columns, "Condition", "Attempt", "SHA256", "Registered",
                         *FACT_COLUMNS])
        used: set[str] = set()
        batch: list[tuple[list[object], object]] = []
        at_sha = 3 + len(label_columns) + 2  # the SHA256 column

        def flush() -> None:
            for row, sha in batch:  # masked photos are made in parallel, written to the CSV in plan order
                row[at_sha] = sha.result() if isinstance(sha, Future) else sha
                writer.writerow(row)
            batch.clear()

        for store, facts, c in _accepted(runs):
            image_id, condition, rep = str(c["image_id"]), c["condition"], c["rep"]
            sizes = {x["path"]: x["bytes"] for x in json.loads(str(c["file_hashes"] or "[]"))}
            image = PurePosixPath(image_id)
            base = f"{image.with_suffix('')}_{condition}_{rep}"
            if base in used:  # e.g. img.jpg and img.png of one folder: keep both, never overwrite
                base = f"{base}_a{c['attempt']}"
            used.add(base)
            photo, registered = str(c["photo"]), c["registered"]
            what = f"the accepted photo of {image_id} ({condition} r{rep})"
            crop = ""
            if registered:  # the x-ray area rectified to the source image: a pixel-aligned pair
                crop = f"{base}.registered.png"
                _link_or_copy(store, str(registered), sizes.get(str(registered)), partial / crop,
                              f"the registered crop of {image_id} ({condition} r{rep})")
            sha: object
            if form == "full":
                rel = base + PurePosixPath(photo).suffix
                _link_or_copy(store, photo, sizes.get(photo), partial / rel, what)
                sha = c["sha256"]
            elif form == "registered":
                if not crop:
                    raise ConfigError(f"--photos registered: {image_id} ({condition} r{rep}) has no registered "
                                      "crop (the session's qa.save_registered was off when it was taken); "
                                      "choose --photos masked or full")
                rel = crop
                sha = next(x["sha256"] for x in json.loads(str(c["file_hashes"])) if x["path"] == registered)
            else:
                rel = base + ".png"
                src = _checked(store, photo, sizes.get(photo), what)
                sha = pool.submit(_write_masked, src, c, partial / rel, what)
            labels = json.loads(str(c["labels"]))
            batch.append(([rel, c["study"], c["source"], *labels, condition, c["attempt"], "", crop,
                           *facts.row(c)], sha))
            count += 1
            if len(batch) >= 64:  # bounded: memory stays flat for a million photos
                flush()
        flush()
        f.flush()
        os.fsync(f.fileno())
    return count


def masked(photo: np.ndarray, homography: np.ndarray, xray: tuple[int, int, int, int]) -> np.ndarray:
    """The photo as shot with every pixel outside the x-ray's quadrilateral set to black.

    The quadrilateral is the x-ray's rectangle on screen (continuous screen pixels) mapped through QA's
    screen-to-photo homography; the fiducial markers sit outside it, in the letterbox bands.
    """
    x, y, w, h = xray
    rect = np.array([[[x, y], [x + w, y], [x + w, y + h], [x, y + h]]], np.float64)
    quad = cv2.perspectiveTransform(rect, homography)[0]
    mask = np.zeros(photo.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, np.round(quad * 16).astype(np.int32), 255, cv2.LINE_8, shift=4)
    return cv2.bitwise_and(photo, photo, mask=mask)


def _write_masked(src: Path, c: dict[str, object], dst: Path, what: str) -> str:
    """Write the masked form of an accepted photo as PNG (lossless: no second JPEG generation, and the
    masked area is exactly black); returns its sha256."""
    qa = json.loads(str(c["qa"] or "{}"))
    image = cv2.imdecode(np.fromfile(src, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ConfigError(f"{src}: {what} is not an image OpenCV decodes (RAW?); choose --photos full")
    if qa.get("homography") is not None:
        if qa.get("xray") is None:
            raise ConfigError(f"{src}: {what} was taken by an older rig that did not record where the x-ray is; "
                              "choose --photos full or registered for this run")
        image = masked(image, np.array(qa["homography"], np.float64), tuple(qa["xray"]))
    # (no homography: the session ran without fiducials; the photo shows no markers and stays as shot)
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise ConfigError(f"{src}: {what} could not be encoded as PNG")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "xb") as f:
        f.write(data.tobytes())
        f.flush()
        os.fsync(f.fileno())
    return hashlib.sha256(data.tobytes()).hexdigest()


def _write_card(stores: list[RunStore], session: Session, partial: Path, counts: Counts, photos: int, form: str,
                facts: _Facts) -> None:
    """The dataset card: how the data set was made, for whoever loads it (rig/templates/dataset_card.md.j2).
    A merge of shards' runs is described by the first shard's session, with every run's counts summed."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("rig", "templates"), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    per_condition: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for s in stores:
        per_condition.update(dict(s.db.execute(
            """SELECT c.label, COUNT(*) FROM attempts a JOIN items it ON it.seq = a.seq
               JOIN conditions c ON c.condition_no = it.condition_no WHERE a.status = 'accepted' GROUP BY c.label""")))
        statuses.update(dict(s.db.execute("SELECT status, COUNT(*) FROM attempts GROUP BY status")))
        kinds.update(s.failure_kinds())
    store = stores[0]
    servos = {s.channel: name for name, s in session.rig.servos.items()}
    lamps = {lamp.channel: name for name, lamp in session.rig.lights.items()}
    conditions = [{"label": c.label, "pose": c.pose, "lighting": c.lighting, "photos": per_condition.get(c.label, 0),
                   "pulses": {servos.get(ch, str(ch)): v for ch, v in c.targets.items()},
                   "lights": {lamps.get(ch, str(ch)): v for ch, v in c.lights.items()}}
                  for c in store.conditions().values()]
    created = float(store.meta("created") or 0)
    shards = [{"session": s.meta("session"), "run": str(s.root), "manifest": s.meta("manifest_source")}
              for s in stores] if len(stores) > 1 else []
    text = env.get_template("dataset_card.md.j2").render(
        version=rig.__version__, session=str(session.path), run=str(store.root),
        run_created=dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="seconds"),
        exported_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        rig=session.rig, rig_path=str(session.rig_path), cal=facts.calibration, cal_name=facts.calibration_name,
        conditions=conditions, repeats=store.meta("repeats"), manifest=store.meta("manifest_source"),
        counts=counts, photos=photos, form=form, statuses=statuses, kinds=dict(kinds.most_common()),
        qa=session.config.qa, fiducials=session.config.fiducials, retries=session.config.retries,
        label_columns=json.loads(store.meta("label_columns") or "[]"),
        retransmissions=sum(s.retransmissions() for s in stores), shards=shards)
    with open(partial / CARD, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _checked(store: RunStore, rel: str, size: int | None, what: str) -> Path:
    """The run's file, if it is there at the size the store recorded.

    A file the store lists but the disk no longer has (or has at another size) stops the export
    with its name: a data set must not silently lack a photo its run accepted.
    """
    src = store.root / rel
    try:
        actual = src.stat().st_size
    except FileNotFoundError:
        actual = None
    if actual is None or (size is not None and actual != size):
        state = "is missing" if actual is None else f"has {actual} bytes, the run store says {size}"
        raise MissingPhoto(f"{src}: {what} {state}; nothing was exported; restore it from a backup "
                           f"('{rig_command()} status {store.meta('session')} --verify' "
                           "lists every missing or changed file)")
    return src


def _link_or_copy(store: RunStore, rel: str, size: int | None, dst: Path, what: str) -> None:
    """Hard-link when on the same file system (instant, no extra space), else copy; never overwrite."""
    src = _checked(store, rel, size, what)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        with open(src, "rb") as f_in, open(dst, "xb") as f_out:
            shutil.copyfileobj(f_in, f_out)
            f_out.flush()
            os.fsync(f_out.fileno())
