"""The run store at CheXpert scale: plan and store ready, resume start, `rig status` with none and with a
million failed attempts, and peak memory while planning and while capturing, on a synthetic 223,414-row
CheXpert-form manifest x 5 conditions (1,117,070 items) on the simulated rig (calibration/sim-rig.yaml).

Every figure is printed as a ratio to its target (issue 13) and to a baseline measured in the same run:
  * plan and store ready (process start to the devices opening, a new run) / reading the manifest CSV
    with the csv module alone (the floor of any plan);
  * resume start (process start to the first trigger) / process start to `import rig.cli` done;
  * status with a million failed attempts / status of the same run with none;
  * peak memory while capturing with the full plan / the same with a 10,000-item plan (what the plan
    costs), and while planning / the same.
Each `rig run` is the real command in its own process; a small wrapper (--probe) only notes the time
and VmHWM when the devices open and at each trigger, and stops the run (SIGINT) after N triggers.
The user cache is a fresh folder, so the new run reads its manifest as a first run does.

    .venv/bin/python bench/bench_store.py [--work /tmp/rig-bench-store] [--captures 25]

The first run writes the data (223,414 symbolic links to 6 phantoms: about a minute); later runs reuse it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = {"ready_s": 10.0, "resume_s": 2.0, "status_s": 2.0, "memory_mb": 300.0}
FAILED_ATTEMPTS = 1_000_000
CONDITIONS = [{"pose": "front", "lighting": "bright"}, {"pose": "front", "lighting": "dim"},
              {"pose": "left", "lighting": "dim"}, {"pose": "left", "lighting": "bright"},
              {"pose": "right_high", "lighting": "left_only"}]


def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def probe(argv: list[str]) -> int:
    """`rig run` in this process, noting (to $PROBE_LOG) when the devices open and each trigger."""
    import rig.devices.kinds as kinds
    from rig.cli import main

    t0, stop_after, log = float(os.environ["PROBE_T0"]), int(os.environ["PROBE_N"]), Path(os.environ["PROBE_LOG"])

    def note(event: str, **extra: object) -> None:
        with log.open("a") as f:
            f.write(json.dumps({"event": event, "t": time.time() - t0, "hwm_mb": _hwm_mb(), **extra}) + "\n")

    original = kinds.open_devices
    triggers = 0

    def open_devices(*args: Any, **kwargs: Any) -> Any:
        note("devices")  # the plan is built and the store ready: what comes now is the rig's
        devices = original(*args, **kwargs)
        trigger = devices.camera.trigger

        def noted_trigger() -> Any:
            nonlocal triggers
            triggers += 1
            note("trigger", n=triggers)
            if triggers == stop_after:
                os.kill(os.getpid(), signal.SIGINT)  # the operator's Ctrl-C: finish this capture, stop
            return trigger()

        devices.camera.trigger = noted_trigger
        return devices

    kinds.open_devices = open_devices
    return main(argv)


def run_probe(session: Path, captures: int, env: dict[str, str]) -> dict[str, Any]:
    """One real `rig run` of `session`; returns the devices event and the first and last triggers."""
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as log:
        t0 = time.time()
        result = subprocess.run([sys.executable, __file__, "--probe", "run", str(session)], cwd=ROOT,
                                env={**env, "PROBE_T0": repr(t0), "PROBE_N": str(captures), "PROBE_LOG": log.name},
                                capture_output=True, text=True, timeout=900)
        events = [json.loads(line) for line in Path(log.name).read_text().splitlines()]
    triggers = [e for e in events if e["event"] == "trigger"]
    if result.returncode not in (0, 130) or not triggers:
        raise SystemExit(f"rig run failed ({result.returncode}): {result.stderr[-2000:]}")
    devices = next(e for e in events if e["event"] == "devices")
    return {"ready_s": devices["t"], "plan_mb": devices["hwm_mb"], "first_s": triggers[0]["t"],
            "capture_mb": triggers[-1]["hwm_mb"], "triggers": len(triggers)}


def timed(command: list[str], env: dict[str, str], repeat: int = 3) -> float:
    """Best wall time of a command (the least disturbed by the other processes of a shared machine)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        best = min(best, time.perf_counter() - started)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed: {result.stderr[-2000:]}")
    return best


def make_data(work: Path) -> tuple[Path, Path]:
    """The full-size manifest and a 2,000-row one (10,000 items), each row a link to one of 6 phantoms."""
    from rig.demo_data import CHEXPERT_TRAIN_ROWS, make_demo_data, write_scale_manifest

    phantoms = work / "phantoms"
    if not (phantoms / "train.csv").exists():
        make_demo_data(phantoms, 6, seed=3)
    images = sorted(phantoms.rglob("*.jpg"))
    out = []
    for name, rows in (("full", CHEXPERT_TRAIN_ROWS), ("small", 2_000)):
        data = work / name
        done = data / "complete"
        if not done.exists():
            print(f"writing the {rows:,}-row manifest and its links under {data} ...", flush=True)
            shutil.rmtree(data, ignore_errors=True)
            write_scale_manifest(data, rows, images)
            done.write_text("")
        out.append(data)
    return out[0], out[1]


def session_for(work: Path, data: Path, name: str) -> Path:
    import yaml

    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "rig": str(ROOT / "calibration" / "sim-rig.yaml"),
        "manifest": {"csv": str(data / "train.csv"), "image_root": str(data)},
        "conditions": CONDITIONS, "repeats": 1, "retries": 2, "output": str(work / f"{name}.run")}))
    shutil.rmtree(work / f"{name}.run", ignore_errors=True)
    return path


def csv_read_s(path: Path) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        with path.open(newline="") as f:
            for _row in csv.reader(f):
                pass
        best = min(best, time.perf_counter() - started)
    return best


def add_failed_attempts(run: Path, n: int) -> None:
    """As a long run with a broken camera leaves its store: n failed attempts (counted by the store's triggers)."""
    from rig.store import RunStore

    store = RunStore(run, checked=True)
    try:
        store.db.execute("PRAGMA synchronous=OFF")  # the bench's own bulk insert; the counting is the store's
        with store.transaction():  # attempts counted by the store's triggers; their kind as record_failure would
            store.db.executemany(
                "INSERT INTO attempts(seq, status, reason, started_at, finished_at) VALUES (?, 'failed', ?, 0, 0)",
                ((k * 7 % 1_117_070, f"camera: no photo in {k % 97} s") for k in range(n)))
            store.db.execute("INSERT INTO counters VALUES ('kind:failed (camera)', ?) "
                             "ON CONFLICT(name) DO UPDATE SET n = n + excluded.n", (n,))
    finally:
        store.close()


def machine() -> str:
    import sqlite3

    model = platform.processor() or "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "rig-bench-store")
    parser.add_argument("--captures", type=int, default=25, help="triggers before the run is stopped")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    full, small = make_data(args.work)
    cache = Path(tempfile.mkdtemp(prefix="rig-bench-cache-"))
    os.environ["XDG_CACHE_HOME"] = str(cache)  # this process writes to a store too (add_failed_attempts)
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "PYGAME_HIDE_SUPPORT_PROMPT": "1"}
    try:
        print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} (shared machine: ratios, not seconds)")
        csv_s = csv_read_s(full / "train.csv")
        import_s = timed([sys.executable, "-c", "import rig.cli"], env)
        rows = []

        session = session_for(args.work, full, "full")
        new = run_probe(session, 1, env)  # a new run: reads the manifest, builds the plan and store
        resumes = [run_probe(session, args.captures, env) for _ in range(2)]
        resume = min(resumes, key=lambda r: r["first_s"])
        small_session = session_for(args.work, small, "small")
        small_new = run_probe(small_session, 1, env)
        small_run = run_probe(small_session, args.captures, env)
        rows.append(("plan + store ready, new run (s)", new["ready_s"], TARGETS["ready_s"],
                     csv_s, "reading the CSV alone"))
        rows.append(("resume start to first trigger (s)", resume["first_s"], TARGETS["resume_s"],
                     import_s, "process start to `import rig.cli`"))
        rows.append(("peak memory while planning (MB)", new["plan_mb"], TARGETS["memory_mb"],
                     small_new["plan_mb"], "planning 10,000 items"))
        rows.append((f"peak memory over {resume['triggers']} captures (MB)", max(r["capture_mb"] for r in resumes),
                     TARGETS["memory_mb"], small_run["capture_mb"], "capturing with a 10,000-item plan"))

        status = [sys.executable, "-m", "rig.cli", "status", str(session)]
        none_s = timed(status, env)
        started = time.perf_counter()
        add_failed_attempts(args.work / "full.run", FAILED_ATTEMPTS)
        print(f"({FAILED_ATTEMPTS:,} failed attempts written in {time.perf_counter() - started:.1f} s)")
        many_s = timed(status, env)
        rows.append(("rig status, no failed attempts (s)", none_s, TARGETS["status_s"], import_s,
                     "process start to `import rig.cli`"))
        rows.append((f"rig status, {FAILED_ATTEMPTS:,} failed attempts (s)", many_s, TARGETS["status_s"], none_s,
                     "status with none"))

        print(f"{'measure':44} {'value':>9} {'target':>8} {'/target':>8} {'baseline':>9} {'/base':>7}  baseline is")
        for name, value, target, base, what in rows:
            print(f"{name:44} {value:9.2f} {target:8.1f} {value / target:8.2f} {base:9.2f} {value / base:7.2f}  {what}")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"]:
        raise SystemExit(probe(sys.argv[2:]))
    raise SystemExit(main())
