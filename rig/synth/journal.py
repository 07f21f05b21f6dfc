"""The output's journal: what command made it and which images are finished.

`synth.json` holds the command's identity (chain, level, seed, input, rig file); a different command
into the same output is refused with what changed. `synth-journal.jsonl` gets one line per finished
or failed image, appended by the parent only after the worker has renamed the image into place, so a
line means a whole file. A kill -9 can leave a half line at the end (dropped on the next start) or a
finished file without its line (made again, byte-identical, on the next start): each image ends up
exactly once.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from rig.errors import ConfigError
from rig.files import atomic_write

SPEC_FILE = "synth.json"
JOURNAL_FILE = "synth-journal.jsonl"
LOCK_FILE = "synth.lock"


def check_spec(out: Path, spec: dict[str, object]) -> bool:
    """Record the command for a new output; for an existing one refuse a different command.
    Returns True when the output was made by this same command before (a resume)."""
    path = out / SPEC_FILE
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: unreadable ({e}); use a new --out") from None
        changed = [f"{k} {_show(old.get(k))} -> {_show(v)}" for k, v in spec.items() if old.get(k) != v]
        if changed:
            raise ConfigError(f"{out}: this output was made by a different command ({'; '.join(changed)}); "
                              f"rerun the original command to finish it, or use a new --out")
        return True
    atomic_write(path, json.dumps(spec, indent=1, sort_keys=True) + "\n",
                 tmp=path.with_name(f".{path.name}.{os.getpid()}.tmp"))  # before the lock: one temp per process
    return False


def _show(v: object) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)


class Journal:
    """Append-only record of finished images; one `rig synth` per output at a time (a lock file)."""

    def __init__(self, out: Path) -> None:
        self.path = out / JOURNAL_FILE
        self._lock = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise ConfigError(f"{out}: another 'rig synth' is writing this output; wait for it or stop it") from None
        self.done: dict[str, dict[str, float]] = {}  # image ID -> parameters
        self.failed: dict[str, str] = {}  # image ID -> reason (tried again on the next start)
        self._load()
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115  (open for the journal's lifetime; close())
        self._synced = time.monotonic()

    def _load(self) -> None:
        if not self.path.exists():
            return
        good = 0
        with open(self.path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # a half line from a kill: dropped below
                try:
                    entry = json.loads(line)
                except ValueError:
                    break
                good += len(line)
                if entry["ok"]:
                    self.done[entry["id"]] = entry["params"]
                    self.failed.pop(entry["id"], None)
                else:
                    self.failed[entry["id"]] = entry["reason"]
        if good != self.path.stat().st_size:
            with open(self.path, "r+b") as f:
                f.truncate(good)

    def record(self, image_id: str, ok: bool, params: dict[str, float] | None, reason: str) -> None:
        entry = {"id": image_id, "ok": ok, "params": params} if ok else {"id": image_id, "ok": False, "reason": reason}
        self._f.write(json.dumps(entry, separators=(",", ":")) + "\n")
        if ok:
            self.done[image_id] = params or {}
            self.failed.pop(image_id, None)
        else:
            self.failed[image_id] = reason
        self._f.flush()  # in the kernel now: survives a kill -9 of this process
        if time.monotonic() - self._synced > 2.0:
            self.sync()

    def sync(self) -> None:
        os.fsync(self._f.fileno())  # and on the disk: survives a power cut (a lost line = image made again)
        self._synced = time.monotonic()

    def close(self) -> None:
        self.sync()
        self._f.close()
        os.close(self._lock)
