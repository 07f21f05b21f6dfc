"""The live run console: the plan line, one refreshing status region, single keys, and --notify.

An operator watches a run over ssh or in tmux: what is done, how fast, what is being shot now, what QA
said last, and can pause it (`p`: the rig parks, the engine waits), resume it (`r`) or stop it (`q`)
with one key. Keys are read only when stdin is a terminal (cbreak mode, restored on every exit);
without one (cron, CI) nothing reads stdin.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from rig.config import RigConfig
from rig.plan import PlannedCondition
from rig.store import Counts

if TYPE_CHECKING:  # the engine pulls in OpenCV; `rig status` needs only duration()
    from rig.engine import Event


def duration(seconds: float) -> str:
    """A duration an operator reads at a glance: 1h 05m, 3m 07s."""
    h, rem = divmod(int(seconds), 3600)
    return f"{h}h {rem // 60:02d}m" if h else f"{rem // 60}m {rem % 60:02d}s"


# ---------------------------------------------------------------- the plan line


def seconds_per_photo(rig: RigConfig, camera: object) -> tuple[float, bool]:
    """Seconds one photo takes by the rig file's timing, and whether the camera's own time is in it.

    The main thread shows the frame (display settle frames) and triggers; the download overlaps the
    next photo, so the slower of the two sets the pace. A camera may report `timing_s` (trigger,
    download); a real one whose time is not known yet counts only the display.
    """
    display = rig.display.settle_frames / rig.display.refresh_hz
    timing = getattr(camera, "timing_s", None)
    if timing is None:
        return display, False
    trigger, download = timing
    return max(display + trigger, download), True


def move_seconds(rig: RigConfig, start: dict[int, int], end: dict[int, int]) -> float:
    """A pose change: the requested move time or the servos' slew limit, whichever is longer, plus settling."""
    slew = {s.channel: s.slew for s in rig.servos.values()}
    travel = max((abs(us - start.get(ch, us)) / slew[ch] for ch, us in end.items() if ch in slew), default=0.0)
    return max(rig.motion.move_ms / 1000, travel) + rig.motion.settle_ms / 1000


def estimate_s(rig: RigConfig, conditions: Sequence[PlannedCondition], photos: int,
               camera: object) -> tuple[float, bool]:
    """Seconds for `photos` photos under `conditions` (plan order, starting from park); see seconds_per_photo."""
    per_photo, complete = seconds_per_photo(rig, camera)
    pose = {s.channel: s.park for s in rig.servos.values()}
    lights: dict[int, int] = {}
    moves = 0.0
    for cond in conditions:
        if cond.targets != pose:
            moves += move_seconds(rig, pose, cond.targets)
        elif cond.lights != lights:  # a new lighting at the same pose: the lamps settle
            moves += rig.motion.settle_ms / 1000
        pose, lights = cond.targets, cond.lights
    return moves + photos * per_photo, complete


def plan_line(rig: RigConfig, conditions: Sequence[PlannedCondition], images: int, repeats: int, counts: Counts,
              camera: object, measured_rate: float | None, resuming: bool) -> str:
    """The one line said before a run starts: captures, conditions, estimated time; on resume, what is done."""
    labels = ", ".join(c.label for c in conditions)
    line = (f"plan: {counts.planned} captures ({images} images x {len(conditions)} conditions x {repeats} "
            f"repeat{'s' if repeats != 1 else ''}; {labels})")
    if resuming:
        line += f"; already {counts.done} done, {counts.failed} failed, {counts.pending} to go"
    if not counts.pending:
        return line + "; nothing left to capture"
    if resuming and measured_rate:
        return line + f"; about {duration(counts.pending / measured_rate)} at the measured {measured_rate * 60:.1f}/min"
    seconds, complete = estimate_s(rig, conditions, counts.pending, camera)
    if complete:
        return line + f"; about {duration(seconds)} by the rig's motion, display and camera timing"
    return (line + f"; at least {duration(seconds)} by the rig's motion and display timing (the camera's time "
            "is measured as the run goes)")


# ---------------------------------------------------------------- the live region


@dataclass
class RunView:
    """What the status region shows; updated from the engine's threads, drawn by rich's refresh thread."""

    planned: int
    done: int  # done or failed for good, this run and before
    failed: int
    started: float = field(default_factory=time.monotonic)
    finished_this_run: int = 0
    retakes: int = 0
    rejected: int = 0
    now: str = "starting ..."
    last_qa: str = "-"
    state: str = "running"  # running, pausing, paused
    parked: str = ""
    paused_s: float = 0.0
    paused_at: float | None = None
    keys: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_event(self, event: Event) -> None:
        """Called from the engine's main and I/O threads."""
        with self._lock:
            self._apply(event)

    def _apply(self, event: Event) -> None:
        item = event.item
        if event.kind == "shooting" and item is not None:
            self.now = f"study {item.study_id}   condition {item.condition.label}   repeat {item.rep}"
        elif event.kind == "accepted" and item is not None:
            self.finished_this_run += 1
            self.done += 1
            self.last_qa = f"accepted {item.image_id} {item.condition.label}: {event.detail}"
        elif event.kind in ("rejected", "retake", "failed") and item is not None:
            self.rejected += event.kind == "rejected"
            if event.kind == "failed":
                self.finished_this_run += 1
                self.done += 1
                self.failed += 1
            else:
                self.retakes += 1
            verb = {"rejected": "rejected, retaking", "retake": "failed, retaking", "failed": "FAILED for good"}
            self.last_qa = f"{verb[event.kind]} {item.image_id} {item.condition.label}: {event.detail}"
        elif event.kind == "paused":
            self.state, self.parked, self.paused_at = "paused", event.detail, time.monotonic()
        elif event.kind == "resumed":
            if self.paused_at is not None:
                self.paused_s += time.monotonic() - self.paused_at
            self.state, self.paused_at = "running", None

    def rate(self) -> float | None:
        """Finished items per second of running time (pauses left out)."""
        running = time.monotonic() - self.started - self.paused_s
        if self.paused_at is not None:
            running -= time.monotonic() - self.paused_at
        return self.finished_this_run / running if self.finished_this_run and running > 0 else None

    def __rich__(self) -> RenderableType:
        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), auto_refresh=False)
        bar.add_task("capturing" if self.state == "running" else self.state, total=self.planned, completed=self.done)
        rate = self.rate()
        left = self.planned - self.done
        eta = "finished" if not left else (duration(left / rate) if rate else "-")
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row("done", f"{self.done}/{self.planned}   rate {rate * 60:.1f}/min   ETA {eta}"
                     if rate else f"{self.done}/{self.planned}   rate -   ETA -")
        grid.add_row("now", "(paused)" if self.state == "paused" else self.now)
        grid.add_row("last QA", Text(self.last_qa, overflow="ellipsis", no_wrap=True))
        grid.add_row("retakes", f"{self.retakes} ({self.rejected} rejected by QA)   failed {self.failed}")
        if self.state == "pausing":
            grid.add_row("PAUSING", "after the capture in progress ...")
        elif self.state == "paused":
            grid.add_row("PAUSED", "lights off, servos parked, screen blank; r resumes")
            grid.add_row("parked", self.parked)
        if self.keys:
            grid.add_row("keys", "p pause   r resume   q stop" if self.state != "paused" else "r resume   q stop")
        return Group(bar, grid)


# ---------------------------------------------------------------- keys


def _in_foreground(fd: int) -> bool:
    """This process owns the terminal: a background job that reads it or changes its mode is stopped."""
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False


@contextlib.contextmanager
def keys(on_key: Callable[[str], None], stream: TextIO | None = None) -> Iterator[bool]:
    """Call `on_key` with every key pressed, without Enter, while the block runs; yields whether keys are read.

    Only when stdin is a terminal: it is put in cbreak mode (Ctrl-C still signals) and restored on
    every exit. Otherwise stdin is left alone.
    """
    stdin = stream if stream is not None else sys.stdin
    try:
        fd = stdin.fileno()
        is_tty = os.isatty(fd)
    except (AttributeError, ValueError, OSError):
        is_tty = False
    if not is_tty or not _in_foreground(fd):  # `rig run ... &`: touching the terminal would stop the process
        yield False
        return
    saved = termios.tcgetattr(fd)
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            if not _in_foreground(fd):  # sent to the background (Ctrl-Z, bg): reading would stop the process
                done.wait(0.5)
                continue
            try:
                ready, _, _ = select.select([fd], [], [], 0.1)
                if not ready:
                    continue
                data = os.read(fd, 32)
            except OSError:  # the terminal is gone (ssh dropped): SIGHUP stops the run
                return
            if not data:
                return
            for ch in data.decode(errors="ignore"):
                on_key(ch)

    tty.setcbreak(fd)
    reader = threading.Thread(target=read, name="rig-keys", daemon=True)
    reader.start()
    try:
        yield True
    finally:
        done.set()
        reader.join(timeout=1)
        # Put the terminal back even if the run was sent to the background meanwhile: blocking SIGTTOU
        # lets a background process change the mode instead of being stopped for it.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
        try:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


@contextlib.contextmanager
def live(view: RunView, console: Console) -> Iterator[None]:
    """Show `view` in one refreshing region on a terminal; log lines print above it instead of through it.

    Without a terminal (cron, CI, a log file) nothing is drawn: the lines before and after the run say it all.
    """
    if not console.is_terminal:
        yield
        return
    with Live(view, console=console, refresh_per_second=4, redirect_stdout=False, redirect_stderr=False):
        handlers = [h for h in logging.getLogger().handlers
                    if isinstance(h, logging.StreamHandler)
                    and getattr(h, "stream", None) in (sys.stderr, sys.__stderr__)]
        for h in handlers:
            h.setStream(_ConsoleStream(console))
        try:
            yield
        finally:
            for h in handlers:
                h.setStream(sys.stderr)


class _ConsoleStream:
    """A file-like that prints through the rich console, so a log line never tears the live region."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def write(self, text: str) -> int:
        if text.strip():
            self.console.print(text.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        pass


# ---------------------------------------------------------------- --notify


class Notifier:
    """Runs the operator's --notify command (through the shell) when the run finishes, pauses or fails.

    The outcome is in its environment: RIG_OUTCOME (done, paused, failed, stopped), RIG_SESSION, RIG_OUTPUT,
    RIG_PLANNED, RIG_DONE, RIG_FAILED, RIG_PENDING, RIG_REASON. A failing command is a warning only.
    """

    TIMEOUT_S = 60.0

    def __init__(self, command: str | None, session: Path, warn: Callable[[str], None]) -> None:
        self.command, self.session, self.warn = command, session, warn
        self.output: Path | None = None
        self.final_sent = False
        self._threads: list[threading.Thread] = []

    def send(self, outcome: str, reason: str = "", counts: Counts | None = None, final: bool = True) -> None:
        """Run the command; a final outcome waits for it, an operator's pause does not hold the run up."""
        if self.command is None or (final and self.final_sent):
            return
        self.final_sent |= final
        env = {**os.environ, "RIG_OUTCOME": outcome, "RIG_SESSION": str(self.session), "RIG_REASON": reason,
               "RIG_OUTPUT": str(self.output or "")}
        figures = ("", "", "", "") if counts is None else (counts.planned, counts.done, counts.failed, counts.pending)
        env.update(zip(("RIG_PLANNED", "RIG_DONE", "RIG_FAILED", "RIG_PENDING"), map(str, figures)))
        thread = threading.Thread(target=self._run, args=(env,), name="rig-notify", daemon=True)
        thread.start()
        self._threads.append(thread)
        if final:
            self.wait()

    def wait(self) -> None:
        for t in self._threads:
            t.join(self.TIMEOUT_S + 5)
        self._threads.clear()

    def _run(self, env: dict[str, str]) -> None:
        assert self.command is not None
        try:
            done = subprocess.run(self.command, shell=True, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=self.TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.warn(f"--notify command did not finish within {self.TIMEOUT_S:.0f} s; the run's outcome is unchanged")
            return
        except OSError as e:
            self.warn(f"--notify command could not start ({e}); the run's outcome is unchanged")
            return
        if done.returncode != 0:
            said = (done.stderr.strip() or done.stdout.strip()).splitlines()
            self.warn(f"--notify command exited with status {done.returncode}"
                      f"{': ' + said[-1] if said else ''}; the run's outcome is unchanged")

