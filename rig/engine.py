"""The session loop: move, light, show, trigger on the main thread; download, QA and commit as stages after it.

The main thread starts the next move/display as soon as an exposure is done. Each photo then passes
three stages, each overlapping the others (docs/decisions/0013-staged-capture-pipeline.md): the
download thread fetches photos one at a time in trigger order (the camera has one USB link), a small
pool of QA threads judges them (OpenCV releases the GIL; each thread has its own PhotoQA), and the
writer thread, the store's only writer, commits each attempt exactly once in download order. The main
thread never triggers while `backlog` captures are still uncommitted, so memory stays flat and a
rejected photo is retaken within a few shots. A failed attempt is kept with its reason and the item is
retaken up to `retries` times, then marked failed while the run goes on.

Timing is not trusted: every shown frame gets a run-wide increasing id that the display spells in
ArUco markers, and the writer accepts a photo only when QA decodes that id from it (plus
coverage, sharpness and exposure). A photo that fails QA is kept as a `rejected` attempt with its
reasons and the item is retaken.

Nor is the controller trusted blindly: before every trigger the engine confirms with a fresh status
that the read-back positions and light levels equal the plan and that the driver did not have to
restore the controller since they were set (a reset, even one whose `!boot` line was lost); if not,
it sets them again and re-confirms. After the exposure it reads the state again: a photo whose
state did not hold throughout is kept as rejected and retaken, never accepted. The confirmed
readback is stored with the photo.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from rig.capture import Positioner, differs
from rig.devices import CameraFile, MotionState, Shot
from rig.devices.kinds import Devices
from rig.errors import CameraError, CameraUnavailable, DeviceError, RigError
from rig.fiducials import draw_fiducials, fiducial_layout
from rig.images import Prepared, prepare
from rig.plan import PlannedCondition
from rig.qa import Expected, PhotoQA, Verdict
from rig.session import Session
from rig.store import REASON_KIND, Capture, Item, RunStore
from rig.tone import Window

log = logging.getLogger(__name__)

# Captures triggered but not yet committed. Enough that the camera always has the next photo waiting
# for its link while earlier ones are judged and written; few enough that memory stays flat and a
# rejected photo is retaken a few shots later, usually still at its pose.
BACKLOG = 4
QA_THREADS = 2  # OpenCV releases the GIL: two photos are judged at once on two cores


@dataclass
class RunResult:
    captured: int = 0  # accepted this run
    failed_items: int = 0  # items that failed for good this run
    failed_attempts: int = 0
    rejected: int = 0  # photos QA refused this run (included in failed_attempts)
    elapsed_s: float = 0.0
    stop_reason: str | None = None  # None: the plan is finished
    interrupted: bool = False
    failures: dict[str, int] = field(default_factory=dict)  # items failed for good this run, by kind of reason
    safe: bool = False  # the controller confirmed lights off and servos at park after the run
    unsafe_reason: str = "the rig was not parked"  # what failed when `safe` is False


@dataclass(frozen=True)
class Event:
    """What a live console shows: the item being shot or judged and how it went, or a pause.

    kind: "shooting", "accepted", "rejected" (by QA or the controller's state; retaken), "retake" (an attempt
    that failed otherwise; retaken), "failed" (the item, for good),
    "paused" (detail: the parked state the controller reports), "resumed".
    """

    kind: str
    item: Item | None = None
    detail: str = ""


@dataclass
class _Job:
    item: Item
    capture: Capture
    shot: Shot | None = None
    failure: str | None = None  # set: record a failed attempt instead of downloading
    max_attempts: int | None = 1  # None: the attempt was lost to the camera, not the item's fault
    expected: Expected | None = None
    invalid: str | None = None  # set: the rig's state did not hold during the exposure; keep as rejected
    files: Sequence[CameraFile] = ()  # downloaded
    judged: Future[_Judged] | None = None  # QA's verdict, when it is due
    handed: float = 0.0  # time.monotonic() when the last stage handed the job on (for the stage waits)


@dataclass
class _Judged:
    verdict: Verdict
    registered: bytes | None  # PNG of the registered x-ray area, when asked for and accepted
    started: float  # time.monotonic()
    finished: float


@dataclass
class _Shared:
    """What the main thread and the stages tell each other."""

    retry: collections.deque[int] = field(default_factory=collections.deque)
    in_flight: int = 0
    lock: threading.Condition = field(default_factory=threading.Condition)
    fatal: BaseException | None = None
    pause: str | None = None
    # The writer paused the run (a failure streak): photos still in the stages are not committed, their
    # items stay pending, as when the pause comes before they are downloaded.
    halted: bool = False


class Engine:
    def __init__(self, session: Session, store: RunStore, reader: RunStore, devices: Devices,
                 on_progress: Callable[[str], None] = lambda outcome: None,
                 on_event: Callable[[Event], None] = lambda event: None, backlog: int = BACKLOG,
                 qa_threads: int = QA_THREADS) -> None:
        self.session, self.store, self.reader, self.devices = session, store, reader, devices
        self.rig = session.rig
        self.on_progress = on_progress
        self.on_event = on_event
        self.stop = threading.Event()
        self._hold = threading.Event()  # set: the operator asked for a pause (see pause(), resume())
        self._go = threading.Event()
        self.abandon = threading.Event()
        self.max_attempts = session.config.retries + 1
        self._shared = _Shared()
        self.backlog, self.qa_threads = backlog, qa_threads
        # Each holds at most `backlog` jobs (the main thread waits for room first) and the end marker.
        self._downloads: queue.Queue[_Job | None] = queue.Queue(maxsize=backlog + 1)
        self._commits: queue.Queue[_Job | None] = queue.Queue(maxsize=backlog + 1)
        self._result = RunResult()
        self.positioner = Positioner(devices.motion, self.rig.motion)
        self._retransmissions_saved = getattr(devices.motion, "retransmissions", 0)
        self._reasons_saved: dict[str, int] = dict(getattr(devices.motion, "retransmission_reasons", {}))
        display = devices.display
        self.layout = fiducial_layout(display.width, display.height) if session.config.fiducials else None
        self._qa = threading.local()  # each QA thread's own PhotoQA (OpenCV detectors are not shared)
        self._next_frame = store.next_frame_id()
        self._streak: tuple[int, set[str], set[str]] = (0, set(), set())  # items, checks all failed, conditions

    # ------------------------------------------------------------ main thread

    def pause(self) -> None:
        """Ask for a pause (any thread): the capture in progress finishes, then the rig parks and waits."""
        self._go.clear()
        self._hold.set()

    def resume(self) -> None:
        """End a pause (any thread); pose and lights are set and confirmed again before the next trigger."""
        self._hold.clear()
        self._go.set()

    def run(self) -> RunResult:
        t0 = time.monotonic()
        self.store.end_pauses()  # before the stages start: the store has one writer at a time
        qa_pool = ThreadPoolExecutor(max_workers=self.qa_threads, thread_name_prefix="rig-qa")
        downloader = threading.Thread(target=self._downloader, args=(qa_pool,), name="rig-download", daemon=True)
        writer = threading.Thread(target=self._writer, name="rig-io", daemon=True)
        downloader.start()
        writer.start()
        prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rig-prefetch")
        try:
            self._loop(prefetch)
        finally:
            self._finish_stages(writer)
            prefetch.shutdown(wait=False, cancel_futures=True)
            qa_pool.shutdown(wait=False)  # not cancelling: an abandoned writer may still wait on a verdict
            self._result.safe = False  # an operator's pause may have confirmed it before: confirm it again now
            self._safe_state()
            if not writer.is_alive():  # the store has one writer: only once the writer thread is done
                self._save_retransmissions()
            self._result.elapsed_s = time.monotonic() - t0
        if self._result.failures:
            log.warning("items failed this run, by reason: %s",
                        ", ".join(f"{kind} {n}" for kind, n in self._result.failures.items()))
        if self._shared.fatal is not None:
            raise self._shared.fatal
        if self._shared.pause and not self._result.stop_reason:
            self._result.stop_reason = self._shared.pause
        if (self._result.stop_reason or self._result.interrupted) and not writer.is_alive():
            self.store.end_pauses()  # an operator's pause that a stop ended: one open pause, the stop
            self.store.record_pause(self._result.stop_reason or "stopped by the operator")
        return self._result

    def _finish_stages(self, writer: threading.Thread) -> None:
        """Let the stages download, judge and commit what is queued; a second Ctrl-C (abandon) cuts that short.

        An abandoned download or commit still in progress gets a few seconds; its item stays pending.
        """
        self._downloads.put(None)  # never blocks: the queue has room for the end marker
        deadline = None
        while writer.is_alive():  # the end marker passes the download stage before it reaches the writer
            if self.abandon.is_set():
                deadline = deadline or time.monotonic() + 5
                if time.monotonic() > deadline:
                    break
            writer.join(timeout=0.2)

    def _loop(self, prefetch: ThreadPoolExecutor) -> None:
        display = self.devices.display
        w, h = display.width, display.height
        root = self.session.image_root or self.session.image_folder
        band = self.layout.band if self.layout else 0
        cap = self.session.config.max_image_pixels
        window = self.session.config.window.pair() if self.session.config.window else None
        ahead: dict[int, Future[tuple[Prepared, float]]] = {}
        for item, upcoming in self._items():
            if self._stopping():
                break
            if self._hold.is_set():
                self._held_by_operator()
            if self.stop.is_set() or self._shared.pause or self._shared.fatal:
                break
            for nxt in upcoming:
                if nxt.seq not in ahead:
                    ahead[nxt.seq] = prefetch.submit(_prepare, nxt.file, w, h, root, band, cap, window)
            fut = ahead.pop(item.seq, None) or prefetch.submit(_prepare, item.file, w, h, root, band, cap, window)
            try:
                prepared, preparing = fut.result()
            except ValueError as e:
                if root is not None and not root.is_dir():  # an unmounted drive, not a bad image: pause
                    self._result.stop_reason = (f"the image folder {root} is gone (unmounted drive?); "
                                                "mount it again")
                    break
                self._enqueue(_Job(item, self._capture(item, None), failure=str(e), max_attempts=1))
                continue
            started = time.monotonic()
            frame_id = self._next_frame
            self._next_frame += 1
            frame = prepared.canvas
            if self.layout is not None:
                frame = draw_fiducials(frame, frame_id, self.layout)
            x, y, xw, xh = prepared.xray
            expected = Expected(frame_id if self.layout else None, self.layout, prepared.xray, prepared.source_size,
                                prepared.canvas[y:y + xh, x:x + xw])
            drawing = time.monotonic() - started
            self.on_event(Event("shooting", item))
            cond = item.condition
            try:
                ready = self.positioner.ready(cond.targets, cond.lights, partial(display.show, frame), cond.label,
                                              f"{item.image_id} {cond.label}")
            except DeviceError as e:  # the controller is gone or will not hold the plan: pause, say why
                self._result.stop_reason = f"controller: {e}"
                break
            readback = ready.readback
            capture = self._capture(item, readback, frame_id)
            capture.timing.update(ready.timing, prepare=preparing, fiducials=drawing)
            waited = time.monotonic()
            if not self._wait_for_room():  # QA and the writer are `backlog` captures behind: let them catch up
                break
            triggered = time.monotonic()
            capture.timing["backlog_wait"] = triggered - waited
            try:
                shot = self.devices.camera.trigger()
                capture.timing["trigger"] = time.monotonic() - triggered
            except CameraUnavailable as e:
                self._result.stop_reason = str(e)
                self._enqueue(_Job(item, capture, failure=f"camera: {e}", max_attempts=None))
                break
            except CameraError as e:
                self._enqueue(_Job(item, capture, failure=f"camera: {e}", max_attempts=self.max_attempts))
                continue
            try:
                t = time.monotonic()
                invalid = self._held(item.condition, readback)
                capture.timing["readback"] = time.monotonic() - t
            except DeviceError as e:
                self._result.stop_reason = f"controller: {e}"
                invalid = f"the controller stopped answering after the exposure ({e})"
            self._enqueue(_Job(item, capture, shot=shot, max_attempts=self.max_attempts, expected=expected,
                               invalid=invalid))
            if self._result.stop_reason:
                break

    def _held_by_operator(self) -> None:
        """The operator's pause: let the captures in flight be committed, park the rig, blank the screen and
        wait for resume() or a stop. Pose and lights are then set again like after a reset."""
        with self._shared.lock:
            while self._shared.in_flight and not self._stopping():
                self._shared.lock.wait(0.1)
        if self._stopping():  # a stop overtook the pause: the writer may still write; run() records the stop
            return
        # nothing is in flight, so every stage is idle and the store has this one writer
        self.store.record_pause("paused by the operator (p)")
        self._safe_state()
        try:
            st = self.devices.motion.state()
            parked = (f"controller reports servos {' '.join(map(str, st.positions))}, "
                      f"lights {' '.join(map(str, st.lights))}")
        except RigError as e:
            parked = f"could not read the controller ({e})"
        if not self._result.safe:
            parked = f"the rig may NOT be safe: {self._result.unsafe_reason}; {parked}"
        self.on_event(Event("paused", detail=parked))
        while not self._go.wait(0.2):
            if self._stopping():
                return
        self.positioner.forget()  # parked now: move and light again, confirmed before the trigger
        self.store.end_pauses()
        self.on_event(Event("resumed"))

    def _items(self) -> Iterator[tuple[Item, list[Item]]]:
        """Pending items in plan order, then retakes; each with the next few for prefetching."""
        last = -1
        while True:
            with self._shared.lock:
                retry = self._shared.retry.popleft() if self._shared.retry else None
            if retry is not None:
                yield self.reader.item(retry), []
                continue
            page = self.reader.pending_after(last, 32)
            if page:
                for i, item in enumerate(page):
                    last = item.seq
                    yield item, page[i + 1:i + 4]
                    with self._shared.lock:
                        if self._shared.retry:
                            break
                continue
            with self._shared.lock:  # nothing pending: wait for in-flight captures that may need a retake
                while self._shared.in_flight and not self._shared.retry and not self._stopping():
                    self._shared.lock.wait(0.1)
                if not self._shared.retry:
                    return

    def _stopping(self) -> bool:
        return self.stop.is_set() or self.abandon.is_set() or bool(self._shared.fatal) or bool(self._shared.pause)

    def _held(self, cond: PlannedCondition, before: MotionState) -> str | None:
        """Why the confirmed state did not hold through the exposure, or None if it did."""
        return self.positioner.held(before, cond.targets, cond.lights)

    def _capture(self, item: Item, readback: MotionState | None, frame_id: int | None = None) -> Capture:
        """The attempt's record; its readback is the confirmed state, what any controller reports."""
        state: dict[str, object] = {} if readback is None else {"positions": list(readback.positions),
                                                                "lights": list(readback.lights)}
        return Capture(item.seq, time.time(), item.condition.targets, state, item.condition.lights, frame_id)

    def _wait_for_room(self) -> bool:
        """Wait until fewer than `backlog` captures are uncommitted; False if the run ends meanwhile."""
        with self._shared.lock:
            while self._shared.in_flight >= self.backlog:
                if self._shared.fatal or self.abandon.is_set():
                    return False
                self._shared.lock.wait(0.1)
        return True

    def _enqueue(self, job: _Job) -> None:
        """Hand a capture (or a failed attempt to record) to the download stage, once there is room."""
        if not self._wait_for_room():
            return
        with self._shared.lock:
            self._shared.in_flight += 1
        job.handed = time.monotonic()
        self._downloads.put(job)  # never blocks: it holds at most `backlog` jobs and the end marker

    def _safe_state(self) -> None:
        """Lights off, servos parked, screen black: the rig is safe to walk up to.

        `RunResult.safe` is set only when the controller's readback confirms it.
        """
        try:
            self.devices.display.blank()
        except RigError as e:
            log.error("could not blank the screen: %s", e)
        try:
            self.devices.motion.park()
            st = self.devices.motion.wait_idle(self.rig.motion.idle_timeout_s)
        except RigError as e:
            self._result.unsafe_reason = f"parking failed: {e}"
            return
        parked = {s.channel: s.park for s in self.rig.servos.values()}
        off = {light.channel: 0 for light in self.rig.lights.values()}
        problem = differs(st, parked, off)
        if problem is None:
            self._result.safe = True
        else:
            self._result.unsafe_reason = f"the controller did not confirm parking: {problem}"

    def _save_retransmissions(self) -> None:
        """Add the link's retransmissions since the last save to the store (shown by `rig status`)."""
        n = getattr(self.devices.motion, "retransmissions", 0)
        if n != self._retransmissions_saved:
            reasons = dict(getattr(self.devices.motion, "retransmission_reasons", {}))
            self.store.add_retransmissions(n - self._retransmissions_saved, {
                why: k - self._reasons_saved.get(why, 0) for why, k in reasons.items()})
            self._retransmissions_saved, self._reasons_saved = n, reasons

    # ------------------------------------------------------------ download stage and QA threads

    def _downloader(self, qa_pool: ThreadPoolExecutor) -> None:
        """Fetch each photo in trigger order, one at a time (the camera's one link), and hand it to QA;
        the job goes on to the writer at once, which waits for the verdict in download order."""
        while (job := self._downloads.get()) is not None:
            if self.abandon.is_set() or self._shared.fatal:
                self._done_with(job)
                continue
            if job.failure is None and self._shared.pause:
                self._done_with(job)  # the camera is gone: leave the item pending, it is retaken on resume
                continue
            try:
                if job.failure is None:
                    self._download(job, qa_pool)
            except BaseException as e:  # a bug or a broken pool: stop the run, keep the reason
                log.debug("download stage failed", exc_info=True)
                self._shared.fatal = e
                self.stop.set()
                self._done_with(job)
                continue
            self._commits.put(job)  # never blocks: at most `backlog` jobs and the end marker
        self._commits.put(None)

    def _download(self, job: _Job, qa_pool: ThreadPoolExecutor) -> None:
        assert job.shot is not None
        t = time.monotonic()
        job.capture.timing["download_wait"] = t - job.handed
        try:
            job.files = self.devices.camera.download(job.shot)
            job.handed = time.monotonic()
            job.capture.timing["download"] = job.handed - t
        except CameraUnavailable as e:
            self._pause_for(str(e))
            job.failure = f"download: {e}"
            job.max_attempts = None
        except (CameraError, DeviceError) as e:
            job.failure = f"download: {e}"
        else:
            if job.invalid is None:  # an invalid photo is kept as rejected without judging it
                assert job.expected is not None
                register = self.session.config.qa.save_registered and job.expected.layout is not None
                try:
                    job.judged = qa_pool.submit(self._judge, [f.data for f in job.files], job.expected, register)
                except RuntimeError:  # the pool is shut: the run was abandoned while this download hung
                    if not self.abandon.is_set():
                        raise

    def _judge(self, files: list[bytes], expected: Expected, register: bool) -> _Judged:
        """QA of one capture, on a QA thread with that thread's own PhotoQA."""
        qa: PhotoQA | None = getattr(self._qa, "checker", None)
        if qa is None:
            qa = self._qa.checker = PhotoQA(self.session.config.qa)
        started = time.monotonic()
        verdict, registered = qa.check_files(files, expected, register)
        return _Judged(verdict, registered, started, time.monotonic())

    # ------------------------------------------------------------ writer thread (the store's only writer)

    def _writer(self) -> None:
        while (job := self._commits.get()) is not None:
            if self.abandon.is_set() or self._shared.fatal:
                self._done_with(job)
                continue
            try:
                self._write(job)
                self._save_retransmissions()
            except BaseException as e:  # disk full, database gone: stop the run, keep the reason
                log.debug("writer thread failed", exc_info=True)
                self._shared.fatal = e
                self.stop.set()
            finally:
                self._done_with(job)

    def _done_with(self, job: _Job) -> None:
        with self._shared.lock:
            self._shared.in_flight -= 1
            self._shared.lock.notify_all()

    def _write(self, job: _Job) -> None:
        failure, timing, files = job.failure, job.capture.timing, job.files
        if failure is None and self._shared.halted:
            return
        if failure is not None:
            final = self.store.record_failure(job.item.seq, failure, job.max_attempts, job.capture)
            self.on_event(Event("failed" if final else "retake", job.item, failure))
            self._after_failure(job, failure, final)
            return
        if job.invalid is not None:  # never accepted, kept for the record, retaken
            timing["commit_wait"] = time.monotonic() - job.handed
            failure = f"controller: {job.invalid}"
            final = self.store.commit_rejected(job.item, job.capture, files, failure, job.max_attempts or 1)
            self._result.rejected += 1
            self.on_event(Event("failed" if final else "rejected", job.item, failure))
            self._after_failure(job, failure, final)
            return
        assert job.judged is not None and job.expected is not None
        judged = job.judged.result()
        timing.update(qa_wait=judged.started - job.handed, qa=judged.finished - judged.started,
                      commit_wait=time.monotonic() - judged.finished)
        verdict = judged.verdict
        # the x-ray's rectangle on screen: with the homography it locates the x-ray in the photo (export)
        record = {**verdict.record(), "xray": list(job.expected.xray)}
        if verdict.ok:
            self.store.commit_photo(job.item, job.capture, files, record, judged.registered)
            self._result.captured += 1
            self._streak = (0, set(), set())
            self.on_event(Event("accepted", job.item, _summary(verdict)))
            self.on_progress("done")
            return
        failure = "qa: " + "; ".join(verdict.reasons)
        attempts = self.max_attempts if job.max_attempts is None else job.max_attempts
        final = self.store.commit_rejected(job.item, job.capture, files, failure, attempts, record)
        self._result.rejected += 1
        self.on_event(Event("failed" if final else "rejected", job.item, failure))
        self._after_failure(job, failure, final)

    def _after_failure(self, job: _Job, failure: str, final: bool) -> None:
        self._result.failed_attempts += 1
        if final:
            self._result.failed_items += 1
            self.on_progress("failed")
            kind = failure.split(":", 1)[0]  # "image not found", "camera", "qa", ...
            seen = self._result.failures[kind] = self._result.failures.get(kind, 0) + 1
            if seen == 1:  # a wrong image root must not print a million lines: the rest are counted
                log.warning("%s under %s failed: %s (more '%s' failures are counted, not listed)",
                            job.item.image_id, job.item.condition.label, failure, kind)
            if job.capture.frame_id is not None:  # shown and photographed: not an image of its own that failed
                self._count_streak(job.item, failure)
        elif not self._shared.pause:
            with self._shared.lock:
                self._shared.retry.append(job.item.seq)

    def _count_streak(self, item: Item, failure: str) -> None:
        """Pause when `failure_streak` items in a row failed for good on the same check: a cause common
        to all of them (an over-bright preset, a dead lamp, a bad mount) would fail every item after."""
        limit = self.session.config.failure_streak
        kinds = set(REASON_KIND.findall(failure.removeprefix("qa: "))) or {failure}
        n, common, labels = self._streak
        common = common & kinds if n else kinds
        label = item.condition.label
        self._streak = (n + 1, common, labels | {label}) if common else (1, kinds, {label})
        n, common, labels = self._streak
        if limit and n >= limit and self._pause_for(
                f"{n} consecutive items under {', '.join(sorted(labels))} failed the same check "
                f"({', '.join(sorted(common))}), the last with: {failure}; fix the cause, then "
                "retake them by adding --retry-failed"):
            self._shared.halted = True

    def _pause_for(self, reason: str) -> bool:
        """Pause the run for `reason` (download or writer thread); the first reason stands. True if it did."""
        with self._shared.lock:
            if self._shared.pause:
                return False
            self._shared.pause = reason
            return True


def _prepare(path: Path, width: int, height: int, root: Path | None, band: int, max_pixels: int,
             window: Window | None) -> tuple[Prepared, float]:
    """rig.images.prepare on the prefetch thread, with the seconds it took (part of the capture's "prepare")."""
    t = time.monotonic()
    prepared = prepare(path, width, height, root, band, max_pixels, window)
    return prepared, time.monotonic() - t


def _summary(verdict: Verdict) -> str:
    """An accepted photo's QA figures in a few words."""
    parts = [f"frame {verdict.frame_id}" if verdict.frame_id is not None else None,
             f"sharpness {verdict.sharpness:.3g}" if verdict.sharpness is not None else None,
             f"margin {verdict.margin_px:.0f} px" if verdict.margin_px is not None else None,
             f"clipped {verdict.clipped:.2%}" if verdict.clipped is not None else None]
    return ", ".join(p for p in parts if p)
