"""`rig synth`: check the command, skip what the journal says is done, run the rest on a local process
pool (all cores by default) or a Dask cluster, journal each result, then write CheXphoto's CSVs."""

from __future__ import annotations

import _csv  # the type csv.writer() returns (public name only in _csv)
import argparse
import csv
import hashlib
import io
import itertools
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from rig.errors import ConfigError, RigError
from rig.files import atomic_write
from rig.manifest import Manifest
from rig.synth.base import LEVELS, SETS, chain_dir, parse_chain, registry
from rig.synth.job import TMP_DIR, Item, Outcome, Spec, column_names, exit_with, output_rel, process_batch, split_of
from rig.synth.journal import Journal, check_spec

if TYPE_CHECKING:
    from distributed import Client  # optional (rig[dask]): imported where a scheduler is used

console = Console(stderr=True, soft_wrap=True, highlight=False)


def main(args: argparse.Namespace) -> int:
    if args.list:
        return list_perturbations()
    spec, manifest = _check(args)
    out = Path(spec.out)
    identity = {"chain": list(spec.chain), "level": spec.level, "seed": spec.seed, "input": manifest.describe,
                "rig": _digest(spec.rig_path) if spec.rig_path else None}
    check_spec(out, identity)
    journal = Journal(out)
    try:
        return _run(args, spec, manifest, journal)
    finally:
        journal.close()


def list_perturbations() -> int:
    table = Table(title="rig synth perturbations (--chain NAME[,NAME...], --level 1-4)")
    for col in ("name", "what", "level 1", "level 2", "level 3", "level 4"):
        table.add_column(col, overflow="fold")
    for p in registry().values():
        table.add_row(p.name, p.summary, *p.levels)
    out = Console(width=200)
    out.print(table)
    out.print("sets: " + "; ".join(f"--set {k} = {','.join(v)}" for k, v in SETS.items()), highlight=False)
    return 0


def _check(args: argparse.Namespace) -> tuple[Spec, Manifest]:
    """Every operator mistake, each as one line, before anything is written."""
    if (args.set is None) == (args.chain is None):
        raise ConfigError("rig synth: give exactly one of --set digital|photographic or --chain NAME[,NAME...]")
    chain = SETS[args.set] if args.set else parse_chain(args.chain)
    if args.level not in {str(n) for n in LEVELS}:
        raise ConfigError(f"--level: '{args.level}' is not a level; use 1, 2, 3 or 4")
    if args.seed < 0:
        raise ConfigError(f"--seed: {args.seed}; use a whole number 0 or more")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers: {args.workers}; use 1 or more")
    if args.out is None:
        raise ConfigError("rig synth: --out DIR is required")
    if args.folder is not None and (args.csv or args.image_root):
        raise ConfigError("rig synth: give either --csv CSV --image-root DIR or --folder DIR, not both")
    if args.folder is None and (args.csv is None or args.image_root is None):
        raise ConfigError("rig synth: give --csv CSV with --image-root DIR, or --folder DIR")
    for flag, path, ok in (("--csv", args.csv, Path.is_file), ("--image-root", args.image_root, Path.is_dir),
                           ("--folder", args.folder, Path.is_dir)):
        if path is not None and not ok(path):
            raise ConfigError(f"{flag}: {path} not found; fix the path")
    manifest = Manifest(args.csv, args.image_root, args.folder)
    root = (args.folder or args.image_root).resolve()
    out = args.out.resolve()
    if out.is_relative_to(root):
        raise ConfigError(f"--out: {args.out} is inside the input tree {root}; write the outputs somewhere else")
    rig_path = None
    if "studio" in chain:
        if args.rig is None:
            raise ConfigError("--rig: the studio perturbation needs a rig file (its poses and lighting); "
                              "pass --rig FILE")
        if not args.rig.is_file():
            raise ConfigError(f"--rig: {args.rig} not found; fix the path")
        from rig.synth.studio import load_rig

        load_rig(str(args.rig.resolve()))  # a bad rig file fails here, in one line, not in every worker
        rig_path = str(args.rig.resolve())
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out: cannot create {args.out} ({e.strerror}); choose a writable folder") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"--out: cannot write to {args.out} (permission denied); choose a writable folder")
    return Spec(tuple(chain), int(args.level), args.seed, str(out), rig_path), manifest


def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _run(args: argparse.Namespace, spec: Spec, manifest: Manifest, journal: Journal) -> int:
    out = Path(spec.out)
    shutil.rmtree(out / TMP_DIR, ignore_errors=True)  # temp files of a killed run: never renamed, so never used
    (out / TMP_DIR).mkdir()
    todo: list[Item] = []
    total = 0
    for row in manifest.rows():  # a bad manifest stops here, before any image is made
        total += 1
        if row.image_id not in journal.done:
            todo.append(Item(row.image_id, row.file, output_rel(spec, row.image_id, row.source)))
    already = total - len(todo)
    client = _connect(args.scheduler) if args.scheduler else None
    where = f"Dask scheduler {args.scheduler}" if args.scheduler else f"{_workers(args)} local worker(s)"
    if already:
        console.print(f"resuming {out}: {already} of {total} image(s) already done, {len(todo)} to go")
    console.print(f"rig synth {','.join(spec.chain)} level {spec.level} seed {spec.seed}: "
                  f"{len(todo)} image(s) on {where}")
    started = time.monotonic()
    made = failed_now = 0
    progress = Progress(TextColumn("[bold]synth"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                        TextColumn("failed {task.fields[failed]}"), TimeElapsedColumn(), TextColumn("ETA"),
                        TimeRemainingColumn(), console=console)
    task = progress.add_task("synth", total=total, completed=already, rate="", failed=0)
    stop: str | None = None
    batches = _batches(todo, spec)
    outcomes = _dask(client, spec, batches) if client is not None else _local(args, spec, batches)
    try:
        with progress:
            for outcome in outcomes:
                if outcome.write_error:
                    stop = outcome.reason
                    break
                journal.record(outcome.image_id, outcome.ok, outcome.params, outcome.reason)
                made += outcome.ok
                failed_now += not outcome.ok
                rate = (made + failed_now) / max(1e-9, time.monotonic() - started)
                progress.update(task, advance=1, rate=f"{rate:.1f} img/s", failed=failed_now)
    finally:
        if client is not None:
            client.close()
    journal.sync()
    shutil.rmtree(out / TMP_DIR, ignore_errors=True)
    if stop:
        raise RigError(f"--out: {stop}; the {len(journal.done)} image(s) finished so far are kept: "
                       f"free space or fix the folder, then rerun the same command")
    csvs = write_csvs(spec, manifest, journal)
    elapsed = time.monotonic() - started
    console.print(f"{made} image(s) made this run in {elapsed:.1f} s ({made / elapsed if elapsed else 0:.1f} img/s); "
                  f"{len(journal.done)}/{total} done, {already} were already done, {len(journal.failed)} failed; "
                  f"CSV: {', '.join(str(c.relative_to(out)) for c in csvs)}")
    if journal.failed:
        console.print(f"{len(journal.failed)} image(s) failed (rerun the same command to retry them):")
        for image_id, reason in list(journal.failed.items())[:20]:
            console.print(f"  {image_id}: {reason}")
    return 0


def _workers(args: argparse.Namespace) -> int:
    return args.workers or len(os.sched_getaffinity(0))


def _batches(todo: list[Item], spec: Spec) -> Iterator[list[Item]]:
    """A few images per task: small images take milliseconds, so one per task would be all overhead."""
    size = 1 if "studio" in spec.chain else 4
    for i in range(0, len(todo), size):
        yield todo[i:i + size]


def _local(args: argparse.Namespace, spec: Spec, batches: Iterable[list[Item]]) -> Iterator[Outcome]:
    """A process pool over the cores, a bounded number of tasks in flight (memory stays flat)."""
    n = _workers(args)
    ctx = get_context("forkserver")  # no fork of a process whose progress thread may hold a lock
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=exit_with, initargs=(os.getpid(),)) as pool:
        yield from _drain(lambda b: pool.submit(process_batch, spec, b), batches, 3 * n)


def _connect(address: str) -> Client:
    """A client of the Dask scheduler at `address`, or a one-line error (before any output is made)."""
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError("--scheduler: the Dask 'distributed' package is not installed; "
                          "pip install 'rig[dask]'") from None
    refused = _refused(address)
    if refused:  # Client would retry a refused connection for its whole timeout
        raise ConfigError(f"--scheduler: cannot reach {address} ({refused}); check the address")
    try:
        return Client(address, timeout="15s")
    except (OSError, TimeoutError, ValueError) as e:
        raise ConfigError(f"--scheduler: cannot reach {address} ({e}); check the address") from None


def _refused(address: str) -> str | None:
    """Why a TCP scheduler address refuses connections right now, or None (reachable, or not plain TCP)."""
    parsed = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:  # a port that is no number: Client names the problem
        return None
    if parsed.scheme not in ("tcp", "tls") or host is None or port is None:
        return None
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as e:
        return str(e)
    return None


def _dask(client: Client, spec: Spec, batches: Iterable[list[Item]]) -> Iterator[Outcome]:
    """The same tasks on a Dask cluster; its workers read the inputs and write --out on a shared path."""
    from distributed import as_completed

    window = 3 * max(1, sum(client.nthreads().values()))
    it = iter(batches)
    running = as_completed([client.submit(process_batch, spec, b, pure=False)
                            for b in itertools.islice(it, window)])
    for fut in running:
        yield from fut.result()
        nxt = next(it, None)
        if nxt is not None:
            running.add(client.submit(process_batch, spec, nxt, pure=False))


def _drain(submit: Callable[[list[Item]], Future[list[Outcome]]], batches: Iterable[list[Item]],
           window: int) -> Iterator[Outcome]:
    """Keep `window` tasks in flight; yield outcomes as tasks finish, in any order (the outputs do not
    depend on it)."""
    it = iter(batches)
    pending = {submit(b) for b in itertools.islice(it, window)}
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        for fut in done:
            yield from fut.result()
            nxt = next(it, None)
            if nxt is not None:
                pending.add(submit(nxt))


def write_csvs(spec: Spec, manifest: Manifest, journal: Journal) -> list[Path]:
    """One CSV per split at <out>/<chain>/level_<n>/<split>.csv, in manifest order: Path rewritten
    (relative to --out), labels unchanged, then Perturbation, Level, Seed and the drawn parameters."""
    out = Path(spec.out)
    prefixes = column_names(spec.chain)
    reg = registry()
    declared = [f"{p}_{k}" for name, p in zip(spec.chain, prefixes) for k in reg[name].params]
    extra = sorted({k for params in journal.done.values() for k in params} - set(declared))
    params_cols = declared + extra
    header = ["Path", *manifest.label_columns, "Perturbation", "Level", "Seed", *params_cols]
    buffers: dict[str, tuple[io.StringIO, _csv.Writer]] = {}
    for row in manifest.rows():
        params = journal.done.get(row.image_id)
        if params is None:
            continue
        split = split_of(row.source)
        if split not in buffers:
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(header)
            buffers[split] = (buf, w)
        buf, w = buffers[split]
        values = ["" if params.get(c) is None else f"{params[c]:.6g}" for c in params_cols]
        w.writerow([output_rel(spec, row.image_id, row.source), *row.labels, ",".join(spec.chain), spec.level,
                    spec.seed, *values])
    paths = []
    for split, (buf, _) in sorted(buffers.items()):
        path = out / chain_dir(spec.chain) / f"level_{spec.level}" / f"{split}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, buf.getvalue())
        paths.append(path)
    return paths
