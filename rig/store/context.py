"""What the store keeps about a run besides its captures: the rig's context over time, the
controller link's retransmissions, and the pauses (all shown by `rig report` and the export)."""

from __future__ import annotations

import json
import time
from typing import Any

from rig.store.base import StoreBase


class RunContext(StoreBase):
    def record_context(self, context: dict[str, object]) -> None:
        """Keep what describes the rig from now on (rig/calibration.py capture_context), stamped with the
        time: each photo is described by the newest context from before it was taken."""
        contexts = [*self.contexts(), {"at": time.time(), **context}]
        with self.transaction():
            self.db.execute("INSERT INTO meta(key, value) VALUES ('contexts', ?) ON CONFLICT(key) "
                            "DO UPDATE SET value = excluded.value", (json.dumps(contexts),))

    def contexts(self) -> list[dict[str, Any]]:
        """Every recorded context, oldest first (JSON as written by `record_context`)."""
        return list(json.loads(self.meta("contexts") or "[]"))

    def add_retransmissions(self, n: int, reasons: dict[str, int] | None = None) -> None:
        """Count commands the controller link had to resend (a noisy serial line shows here first),
        in all and by reason ("no reply in time", "damaged reply", ...)."""
        with self.transaction():
            self.db.execute("""INSERT INTO meta(key, value) VALUES ('retransmissions', ?) ON CONFLICT(key)
                               DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value""", (str(n),))
            if reasons:
                total = self.retransmission_reasons()
                for why, k in reasons.items():
                    total[why] = total.get(why, 0) + k
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('retransmission_reasons', ?)",
                                (json.dumps({w: k for w, k in total.items() if k}),))

    def retransmissions(self) -> int:
        return int(self.meta("retransmissions") or 0)

    def retransmission_reasons(self) -> dict[str, int]:
        reasons: dict[str, int] = json.loads(self.meta("retransmission_reasons") or "{}")
        return reasons

    def record_pause(self, reason: str) -> None:
        """Keep why the run paused or stopped (shown by `rig report`); the next run's start ends it."""
        with self.transaction():
            self.db.execute("INSERT INTO pauses(paused_at, reason) VALUES (?, ?)", (time.time(), reason))

    def end_pauses(self) -> None:
        """The run goes on: every open pause ends now."""
        with self.transaction():
            self.db.execute("UPDATE pauses SET resumed_at = ? WHERE resumed_at IS NULL", (time.time(),))
