"""`rig`: run, resume, inspect and export capture sessions.

Operator mistakes end as one line on stderr and exit status 2 (3 for devices); never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from rig.calibration import file as calibration
from rig.command import rig_command
from rig.console import Notifier, RunView, duration, keys, live, plan_line
from rig.errors import ConfigError, DeviceError, PlanChangedError, RigError
from rig.manifest import Manifest
from rig.plan import Plan, manifest_digest
from rig.session import Session, load_session
from rig.store import RunStore

if TYPE_CHECKING:  # the engine is imported when a run starts, not for every command
    from rig.engine import Engine, Event

console = Console(stderr=True, soft_wrap=True, highlight=False)
log = logging.getLogger("rig")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every argument's default after its help (none for required ones), the example as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.required:
            return action.help
        return super()._get_help_string(action)


def _command(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str,
             example: str) -> argparse.ArgumentParser:
    """A sub-command whose --help says what it does, each argument's default, and one example."""
    return sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                          formatter_class=_HelpFormatter)


SESSION_HELP = "the session file (YAML: rig, manifest, conditions, repeats, output)"
RIG_HELP = "the rig file (YAML: servos, lights, camera, display, poses, lighting)"


def build_parser() -> argparse.ArgumentParser:
    from rig import __version__

    parser = argparse.ArgumentParser(prog="rig", description="Controller for a CheXphoto-style photo-capture rig.",
                                     epilog="example:\n  rig run sessions/demo.yaml", formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"rig {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, "run", "run or resume a capture session", "rig run sessions/demo.yaml")
    p.add_argument("session", type=Path, help=SESSION_HELP)
    p.add_argument("--replan", action="store_true",
                   help="accept a changed session file: keep the captures that still match, plan the rest")
    p.add_argument("--fast", action="store_true",
                   help="simulated devices only: no simulated latencies or frame waits (real ones are unchanged)")
    p.add_argument("--retry-failed", action="store_true",
                   help="re-queue the items that failed for a fresh set of retakes (their attempts are kept)")
    p.add_argument("--notify", metavar="COMMAND",
                   help="shell command run when the run finishes, pauses or fails; RIG_OUTCOME (done, paused, "
                        "failed, stopped), RIG_SESSION, RIG_DONE, RIG_PLANNED, RIG_FAILED, RIG_REASON, ... in its "
                        "environment")
    p.set_defaults(func=cmd_run)

    p = _command(sub, "status", "planned / done / failed / pending, rate and ETA",
                 "rig status sessions/demo.yaml --verify")
    p.add_argument("session", type=Path, help=SESSION_HELP)
    p.add_argument("--verify", action="store_true",
                   help="rehash every file the run keeps against its recorded size and sha256 (exit 1 if any differ)")
    p.set_defaults(func=cmd_status)

    p = _command(sub, "export", "write the run as a CheXpert-style data set: photos, captures.csv, README.md; "
                 "with --merge, the runs of a session's shards (rig shard) as one data set",
                 "rig export sessions/demo.yaml --out demo/export --photos masked\n"
                 "  rig export sessions/demo.shards/shard-1-of-3.yaml --merge sessions/demo.shards/shard-2-of-3.yaml "
                 "sessions/demo.shards/shard-3-of-3.yaml --out demo/export")
    p.add_argument("session", type=Path, help=SESSION_HELP)
    p.add_argument("--merge", type=Path, nargs="+", metavar="SESSION",
                   help="the session files of the other shards: their runs join this one's in one data set "
                        "(refused if they overlap or differ in conditions, QA thresholds or calibration)")
    p.add_argument("--out", type=Path, required=True, help="folder to write the data set to (replaced as a whole)")
    p.add_argument("--replace", action="store_true", help="overwrite an export of another run in --out")
    p.add_argument("--photos", choices=("masked", "full", "registered"), default="masked",
                   help="masked: as shot, black outside the x-ray (no fiducial markers); full: the camera's files; "
                        "registered: the x-ray rectified to the source image")
    p.set_defaults(func=cmd_export)

    p = _command(sub, "shard", "split a session by patient into N session files, one per rig (each with its own "
                 "manifest and output); merge their runs with: rig export SHARD --merge OTHER...",
                 "rig shard sessions/demo.yaml --rigs 3")
    p.add_argument("session", type=Path, help=SESSION_HELP)
    p.add_argument("--rigs", type=int, required=True, help="how many shards (rigs or machines) to split it into")
    p.add_argument("--replace", action="store_true", help="rewrite shards written before (their runs are kept)")
    p.set_defaults(func=cmd_shard)

    p = _command(sub, "report", "write report.html into the run folder (thumbnails in report_files/ beside it): "
                 "contact sheets, rejects, QA and timing plots; prints its path", "rig report sessions/demo.yaml")
    p.add_argument("session", type=Path, help=SESSION_HELP)
    p.set_defaults(func=cmd_report)

    p = _command(sub, "calibrate", "measure the rig from photos of a ChArUco board on its monitor",
                 "rig calibrate intrinsics calibration/sim-rig.yaml")
    cal = p.add_subparsers(dest="action", required=True, metavar="WHAT")
    c = _command(cal, "intrinsics", "camera matrix and distortion from views of the board",
                 "rig calibrate intrinsics calibration/sim-rig.yaml --max-rms 0.8")
    c.add_argument("rig", type=Path, help=RIG_HELP)
    c.add_argument("--max-rms", type=float, default=1.0, help="reject a result above this reprojection error (px)")
    c = _command(cal, "angles", "servo pulse -> physical angle for every channel",
                 "rig calibrate angles calibration/sim-rig.yaml --steps 9")
    c.add_argument("rig", type=Path, help=RIG_HELP)
    c.add_argument("--steps", type=int, default=9, help="positions per channel")
    c = _command(cal, "poses", "screen-to-photo geometry and margin of each named pose",
                 "rig calibrate poses calibration/sim-rig.yaml")
    c.add_argument("rig", type=Path, help=RIG_HELP)
    c = _command(cal, "range", "per-channel angle range that keeps the whole screen in frame",
                 "rig calibrate range calibration/sim-rig.yaml --margin 20")
    c.add_argument("rig", type=Path, help=RIG_HELP)
    c.add_argument("--margin", type=float, default=20.0, help="pixels the screen must stay inside the frame")
    p.set_defaults(func=cmd_calibrate)

    p = _command(sub, "jog", "move channels from the keyboard and save named poses", "rig jog calibration/sim-rig.yaml")
    p.add_argument("rig", type=Path, help=RIG_HELP)
    p.set_defaults(func=cmd_jog)

    p = _command(sub, "doctor", "what this machine can reach: cameras, serial ports, firmware tools, a rig",
                 "rig doctor calibration/sim-rig.yaml")
    p.add_argument("rig", type=Path, nargs="?", help="a rig file whose devices to open once")
    p.set_defaults(func=cmd_doctor)

    p = _command(sub, "firmware", "build or flash the rigctl controller firmware", "rig firmware build")
    fw = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    _command(fw, "build", "make -C firmware (Debian's gcc-avr, avr-libc, arduino-core-avr)", "rig firmware build")
    fl = _command(fw, "flash", "flash an Uno/Nano through its bootloader with avrdude",
                  "rig firmware flash --port /dev/ttyACM0 --baud 115200")
    fl.add_argument("--port", required=True, help="serial device of the board, e.g. /dev/ttyACM0")
    fl.add_argument("--baud", type=int, default=115200, help="bootloader baud rate (old Nanos: 57600)")
    p.set_defaults(func=cmd_firmware)

    from rig.synth import add_arguments as synth_arguments

    synth_arguments(_command(sub, "synth", "CheXphoto's synthetic photographic transformations of images",
                             "rig synth --csv demo/data/train.csv --image-root demo/data --out demo/synth/digital "
                             "--set digital"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except RigError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True, emoji=False)
        return e.exit_code
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130


# ---------------------------------------------------------------- run


def _manifest(session: Session) -> Manifest:
    return Manifest(session.manifest_csv, session.image_root, session.image_folder)


@contextmanager
def _run_lock(root: Path) -> Iterator[None]:
    """One `rig run` per run folder; the kernel drops the lock if the process dies."""
    try:
        fd = os.open(root / "run.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ConfigError(f"output {root}: cannot write {root / 'run.lock'} ({e.strerror}); make the folder "
                          "writable or set another 'output:'") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RigError(f"{root}: another 'rig run' is using this run; wait for it or stop it") from None
    try:
        yield
    finally:
        os.close(fd)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: the ssh connection dropped
# what signal.signal() takes and returns (typeshed's private signal._HANDLER)
SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Until the engine installs its own handlers, a stop signal stops `rig run` at once (as Ctrl-C)."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def cmd_run(args: argparse.Namespace) -> int:
    args.notifier = Notifier(args.notify, args.session, _warn)
    try:
        with _stop_on_signals():
            return _cmd_run(args)
    except (KeyboardInterrupt, sqlite3.OperationalError) as e:
        # A long SQLite statement ends as "interrupted" when a stop signal arrived during it.
        if isinstance(e, sqlite3.OperationalError) and "interrupted" not in str(e):
            raise
        console.print(f"[bold yellow]stopped[/] by the operator; every capture committed so far is kept; "
                      f"run it again with: {rig_command()} run {args.session}", highlight=False)
        args.notifier.send("stopped", "stopped by the operator before the run started")
        return 130
    except RigError as e:
        args.notifier.send("failed", str(e))
        raise


def _warn(text: str) -> None:
    console.print(f"[bold yellow]warning:[/] {escape(text)}", highlight=False)


def _cmd_run(args: argparse.Namespace) -> int:
    session = load_session(args.session)
    manifest = _manifest(session)
    plan = Plan.of(session, manifest)
    digest = manifest_digest(manifest)  # reads every row: a bad manifest stops here, before any device moves
    conditions = plan.conditions
    items = digest[1] * len(conditions) * plan.repeats
    if items > session.config.max_items:
        raise ConfigError(f"{args.session}: the plan would have {items} items ({digest[1]} images x "
                          f"{len(conditions)} conditions x {session.config.repeats} repeats), more than "
                          f"max_items ({session.config.max_items}); lower 'repeats' or raise 'max_items'")
    warning = manifest.check_sample(f"{session.path}: manifest.image_root")
    if warning:
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)
    created = _make_output(args.session, session.output)
    try:
        with _run_lock(session.output):  # before any device is touched: a second run must not talk to them
            return _run_locked(args, session, plan, digest)
    except BaseException:  # any end, Ctrl-C included: clean up, then let it through unchanged
        if created and not RunStore.exists(session.output):
            _remove_output(session.output, created)  # nothing written for a run that never started
        raise


def _make_output(session_path: Path, output: Path) -> Path | None:
    """Create the run folder; returns the topmost folder this created (None if it existed)."""
    first_missing = None
    for folder in (output, *output.parents):
        if folder.exists():
            break
        first_missing = folder
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{session_path}: output: cannot create {output} ({e.strerror}); fix 'output:'") from None
    return first_missing


def _remove_output(output: Path, created: Path) -> None:
    (output / "run.lock").unlink(missing_ok=True)
    for folder in (output, *output.parents):
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == created:
            return


def _run_locked(args: argparse.Namespace, session: Session, plan: Plan, digest: tuple[str, int]) -> int:
    from rig.devices.kinds import open_devices
    from rig.engine import Engine

    repeats = plan.repeats
    resuming = RunStore.exists(session.output)
    if resuming:
        existing = RunStore(session.output)
        changes = existing.plan_differences(digest, plan)
        kept = existing.kept_by_replan(plan) if changes and not args.replan else 0
        existing.close()
        if changes and not args.replan:
            raise PlanChangedError(
                f"{args.session}: the plan changed since this run started ({'; '.join(changes)}); "
                f"pass --replan to keep the {kept} done captures that still match, or set a new 'output:'")
    # The plan is built before any device opens: a long build stays stoppable (SDL takes over signals).
    if not resuming:
        store = RunStore.create(session.output, session.path, plan)
    else:
        store = RunStore(session.output, checked=True)
    try:
        if resuming:
            root = session.image_root or session.image_folder
            assert root is not None  # a session has a CSV manifest (and so an image root) or an image folder
            store.rebase_images(root)  # the image folder may have moved
        if resuming and args.replan:
            kept = store.replan(plan)
            console.print(f"replanned: kept {kept} captures that still match the session file")
        store.record_context(calibration.capture_context(session.rig, session.rig_path))
        recovered = store.recover()
        if recovered:
            console.print(f"recovered {recovered} capture(s) interrupted before their commit; they will be retaken")
        if args.retry_failed:
            console.print(f"re-queued {store.retry_failed()} failed item(s); their earlier attempts stay on record")
        devices = open_devices(session.rig, session.rig_path, fast=args.fast)
    except BaseException:  # any end before the devices opened, Ctrl-C included: undo, then let it through
        store.close()
        if not resuming:  # the devices never opened: nothing was captured, leave nothing behind
            for name in ("run.sqlite", "run.sqlite-wal", "run.sqlite-shm"):
                (session.output / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                (session.output / "photos").rmdir()
        raise
    try:
        console.print(plan_line(session.rig, plan.conditions, digest[1], repeats, store.counts(), devices.camera,
                                store.recent_rate(), resuming), highlight=False)
        return _run_engine(Engine, session, store, devices, args.notifier)
    finally:
        devices.close()


def _run_engine(engine_cls: type, session: Session, store: RunStore, devices: object, notifier: Notifier) -> int:
    """The run under the live console: one refreshing region, keys p/r/q on a terminal, --notify at the end."""
    from rig.store import Counts

    reader = RunStore(session.output, checked=True)
    counts = store.counts()
    view = RunView(counts.planned, counts.done + counts.failed, counts.failed)
    notifier.output = session.output

    def view_counts() -> Counts:
        return Counts(view.planned, view.done - view.failed, view.failed, view.planned - view.done, 0)

    def on_event(event: Event) -> None:
        view.on_event(event)
        if event.kind == "paused":
            notifier.send("paused", "paused by the operator (p)", view_counts(), final=False)

    def on_key(key: str) -> None:
        key = key.lower()
        if key == "p" and view.state == "running":
            view.state = "pausing"
            engine.pause()
        elif key == "r" and view.state != "running":
            engine.resume()
            if view.state == "pausing":
                view.state = "running"
        elif key == "q":
            _stop_engine(engine)

    engine = engine_cls(session, store, reader, devices, on_event=on_event)
    previous = _install_stop_handlers(engine)
    try:
        with keys(on_key) as view.keys, live(view, console):
            result = engine.run()
    except (OSError, sqlite3.Error) as e:  # disk full, disk gone: the store is consistent, say so in one line
        error = DeviceError(f"the run stopped writing to {session.output}: {getattr(e, 'strerror', None) or e}; "
                            f"every photo committed so far is safe; fix the disk (free space?), then resume with: "
                            f"{rig_command()} run {session.path}")
        notifier.send("failed", str(error), view_counts())
        raise error from None
    except RigError as e:
        notifier.send("failed", str(e), view_counts())
        raise
    except Exception as e:  # a bug: the operator still hears that the run ended, the traceback says where
        notifier.send("failed", f"{type(e).__name__}: {e}", view_counts())
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        reader.close()
        notifier.wait()
    after = store.counts()
    store.close()
    rate = result.captured / result.elapsed_s if result.elapsed_s else 0.0
    console.print(f"{result.captured} captured this run in {result.elapsed_s:.1f} s ({rate:.2f} captures/s); "
                  f"total {after.done}/{after.planned} done, {after.failed} failed, {after.pending} pending",
                  highlight=False)
    resume = f"resume with: {rig_command()} run {session.path}"
    safe = "lights are off and the servos parked" if result.safe else "the rig may NOT be safe (see above)"
    if not result.safe:  # said only when the controller confirmed it; otherwise what failed and what to check
        console.print(f"[bold red]the rig may not be safe:[/] {result.unsafe_reason}; check that the controller "
                      f"is powered and its cable connected, switch the lights off and check the servos by hand",
                      highlight=False)
    if result.stop_reason:
        console.print(f"[bold yellow]paused:[/] {result.stop_reason}; {safe}; {resume}", highlight=False)
        notifier.send("paused", result.stop_reason, after)
        return 3
    if result.interrupted:
        console.print(f"[bold yellow]stopped[/] by the operator; {safe}; {resume}", highlight=False)
        notifier.send("stopped", "stopped by the operator", after)
        return 130
    notifier.send("done", "", after)
    if after.failed:
        console.print(f"{after.failed} item(s) failed; '{rig_command()} status {session.path}' lists why; "
                      f"retake them with: {rig_command()} run {session.path} --retry-failed", highlight=False)
    return 0


def _stop_engine(engine: Engine) -> None:
    """First Ctrl-C, SIGTERM, SIGHUP or `q`: finish the current capture and stop. Second: abandon it."""
    engine._result.interrupted = True
    if engine.stop.is_set():
        engine.abandon.set()
        say = "abandoning the current capture"
    else:
        engine.stop.set()
        say = "stopping after the current capture (Ctrl-C or q again to abandon it)"
    with contextlib.suppress(OSError):  # SIGHUP: the terminal is gone; stopping matters, telling cannot
        console.print(say)


def _install_stop_handlers(engine: Engine) -> dict[signal.Signals, SignalHandler]:
    return {sig: signal.signal(sig, lambda signum, frame: _stop_engine(engine)) for sig in STOP_SIGNALS}


# ---------------------------------------------------------------- status and export


def _existing_store(session_path: Path, reading: bool = False) -> tuple[Session, RunStore]:
    session = load_session(session_path)
    if not RunStore.exists(session.output):
        raise ConfigError(f"{session_path}: no run at {session.output} yet; "
                          f"start it with: {rig_command()} run {session_path}")
    return session, RunStore(session.output, reading=reading)


def cmd_status(args: argparse.Namespace) -> int:
    # Status reads a handful of rows (counters, the first failed items): the full-file check only if the
    # store changed since a clean close, or with --verify (ADR 0015), so it stays fast at any size.
    session, store = _existing_store(args.session, reading=True)
    c = store.counts()
    rate = store.recent_rate()
    table = Table(title=f"{session.path.name}: {session.output}", show_header=False)
    for name, value in (("planned", c.planned), ("done", c.done), ("failed", c.failed), ("pending", c.pending),
                        ("failed attempts", c.failed_attempts), ("retransmissions", store.retransmissions())):
        table.add_row(name, str(value))
    table.add_row("rate", f"{rate * 3600:.0f} captures/h" if rate else "-")
    eta = "-" if not rate else ("finished" if not c.pending else duration(c.pending / rate))
    table.add_row("ETA", eta)
    out = Console()
    out.print(table)
    kinds = store.failure_kinds()
    if kinds:
        out.print("attempts that did not make it: " + ", ".join(f"{k} {n}" for k, n in kinds.items()),
                  highlight=False, soft_wrap=True)
    failed = store.failed_items()
    if failed:
        out.print(f"failed items (first {len(failed)}):", highlight=False)
        for image_id, label, rep, reason in failed:
            out.print(f"  {image_id} {label} r{rep}: {reason}", highlight=False, soft_wrap=True)
        out.print(f"retake the failed items with: {rig_command()} run {session.path} --retry-failed", highlight=False,
                  soft_wrap=True)
    try:
        return _verify(store, out) if args.verify else 0
    finally:
        store.close()


def _verify(store: RunStore, out: Console) -> int:
    from rig.verify import verify

    store.check_integrity()
    with console.status("rehashing the run's files ...") as spinner:
        seen = 0

        def on_file(size: int) -> None:
            nonlocal seen
            seen += 1
            if seen % 200 == 0:
                spinner.update(f"rehashing the run's files ... {seen}")

        files, size, problems = verify(store, on_file)
    if not problems:
        out.print(f"verified {files} files ({size / 1e6:.1f} MB): every one matches its recorded size and sha256",
                  highlight=False)
        return 0
    out.print(f"[bold red]{len(problems)} of {files} files missing or changed:[/]", highlight=False)
    for p in problems[:50]:
        out.print(f"  {store.root / p.path} ({p.status}, {p.shows}): {p.what}", highlight=False, soft_wrap=True)
    if len(problems) > 50:
        out.print(f"  ... and {len(problems) - 50} more", highlight=False)
    out.print("restore them from a backup of the run folder; the run store still holds their sha256 to check "
              "the restored copies against", highlight=False, soft_wrap=True)
    return 1





def cmd_export(args: argparse.Namespace) -> int:
    from rig.export import export

    sessions = [args.session, *(args.merge or [])]
    with ExitStack() as stack:
        runs = []
        for path in sessions:
            session, store = _existing_store(path)
            stack.callback(store.close)
            runs.append((session, store))
        result = export(runs[0][1], args.out, runs[0][0], replace=args.replace, photos=args.photos, merge=runs[1:])
        pending = [path for path, (_, st) in zip(sessions, runs, strict=True) if st.counts().pending]
        failed = [path for path, (_, st) in zip(sessions, runs, strict=True) if st.counts().failed]
    c = result.counts
    merged = f" from {len(runs)} runs" if len(runs) > 1 else ""
    Console(soft_wrap=True, highlight=False).print(
        f"exported {result.photos} photos ({args.photos}){merged}, captures.csv and README.md to {args.out}: "
        f"{c.done}/{c.planned} done, "
        f"{c.failed} failed, {c.pending} pending")
    if c.pending:
        console.print(f"[bold yellow]incomplete:[/] the run is not finished; "
                      f"resume it with: {rig_command()} run {(pending or sessions)[0]}, then export again",
                      highlight=False)
    elif c.failed:
        console.print(f"[bold yellow]incomplete:[/] {c.failed} item(s) failed for good; "
                      f"'{rig_command()} status {(failed or sessions)[0]}' lists why", highlight=False)
    return 0


def cmd_shard(args: argparse.Namespace) -> int:
    from rig.shard import shard

    session = load_session(args.session)
    shards = shard(session, args.rigs, replace=args.replace)
    out = Console(soft_wrap=True, highlight=False)
    out.print(f"wrote {len(shards)} shard session files to {shards[0].session.parent}:")
    for s in shards:
        out.print(f"  {s.session.name}: {s.images} images of {s.patients} patients; run it with: "
                  f"{rig_command()} run {s.session}")
    rest = " ".join(str(s.session) for s in shards[1:])
    out.print(f"then merge the runs with: {rig_command()} export {shards[0].session}"
              + (f" --merge {rest}" if rest else "") + " --out DIR")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from rig.report import write_report

    session, store = _existing_store(args.session)
    try:
        path = write_report(session, store)
    finally:
        store.close()
    print(path)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from rig.calibration import procedures as run
    from rig.calibration.file import load_or_new, save
    from rig.config import load_rig
    from rig.devices.kinds import open_devices

    rig = load_rig(args.rig)
    geo = run.Geometry.of(rig, args.rig)  # the measured geometry and the servos' roles, or a one-line error
    cal = load_or_new(args.rig, rig)
    if args.action != "intrinsics" and cal.intrinsics is None:
        raise RigError(f"{args.rig}: no camera intrinsics yet; run: {rig_command()} calibrate intrinsics {args.rig}")
    devices = open_devices(rig, args.rig)
    try:
        total = run.planned_photos(args.action, rig, geo, getattr(args, "steps", 9))
        progress = Progress(TextColumn(f"[bold]calibrating {args.action} of {escape(rig.name)}"), BarColumn(),
                            TextColumn("photo"), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                            TimeRemainingColumn(), console=console)
        task = progress.add_task("photos", total=total)
        shooter = run.Shooter(devices, rig, lambda shots: progress.update(task, completed=shots))
        with progress:
            if args.action == "intrinsics":
                lines = run.run_intrinsics(shooter, rig, geo, cal, args.max_rms)
            elif args.action == "angles":
                lines = run.run_angles(shooter, rig, geo, cal, args.steps)
            elif args.action == "poses":
                lines = run.run_poses(shooter, rig, geo, cal)
            else:
                lines = run.run_range(shooter, rig, geo, cal, args.margin)
            progress.update(task, total=shooter.shots, completed=shooter.shots)  # `range` may need fewer
        devices.motion.park()
    finally:
        devices.close()
    path = save(args.rig, cal)
    out = Console(soft_wrap=True, highlight=False)
    for line in lines:
        out.print(line)
    out.print(f"{shooter.shots} photos; saved to {path}")
    return 0


def cmd_jog(args: argparse.Namespace) -> int:
    import curses

    from rig.calibration.file import load
    from rig.config import load_rig
    from rig.devices.kinds import Opening, open_controller
    from rig.jog import Jog, run

    rig = load_rig(args.rig)
    with ExitStack() as stack:  # jogging needs the controller only, not the camera or the display
        motion = open_controller(Opening(rig, args.rig, stack))
        try:
            with _stop_on_signals():  # SIGTERM, SIGHUP (ssh dropped) end jog like Ctrl-C: parked below
                curses.wrapper(run, Jog(rig, args.rig, motion, load(args.rig)))
        finally:  # every exit, a crash included, leaves the rig parked and dark
            previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
            try:
                motion.park()
                console.print("parked, lights off")
            except RigError as e:
                console.print(f"[bold red]could not park the rig:[/] {e}; check the controller's cable and power")
            finally:
                for sig, old in previous.items():
                    signal.signal(sig, old)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from rig.config import load_rig
    from rig.doctor import machine_checks, rig_checks

    rig = load_rig(args.rig) if args.rig is not None else None
    checks = machine_checks(rig)
    if rig is not None:
        checks += rig_checks(rig, args.rig)
    out = Console(soft_wrap=True, highlight=False)
    for c in checks:
        mark = "[green]ok  [/]" if c.ok else ("[red]FAIL[/]" if c.needed else "--  ")
        unneeded = not (c.ok or c.needed or c.listing or rig is None)
        out.print(f"{mark} {c.name}: {c.detail}" + (" (not needed by this rig)" if unneeded else ""))
    if rig is None:
        out.print(f"nothing judged without a rig file; check one with: {rig_command()} doctor RIG")
    return 0 if all(c.ok or not c.needed for c in checks) else 1


def cmd_firmware(args: argparse.Namespace) -> int:
    from rig import firmware

    if args.action == "build":
        firmware.build()
    else:
        firmware.flash(args.port, baud=args.baud)
    return 0


if __name__ == "__main__":
    sys.exit(main())
