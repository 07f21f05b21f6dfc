"""Recovery after a crash: attempts journalled as `writing` but never committed lose their files
(final and temp names, both recorded) and become `interrupted`, so their items are retaken."""

from __future__ import annotations

import json
import time

from rig.files import temp_name
from rig.store.base import StoreBase
from rig.store.schema import count_kinds


class Recovery(StoreBase):
    def recover(self) -> int:
        """Undo attempts a crash left half-written: delete their files, mark them interrupted."""
        rows = self.db.execute("SELECT attempt_id, files FROM attempts WHERE status = 'writing'").fetchall()
        for attempt_id, files in rows:
            for rel in json.loads(files or "[]"):
                final = self.root / rel
                final.unlink(missing_ok=True)
                temp_name(final).unlink(missing_ok=True)
            with self.transaction():
                self.db.execute(
                    """UPDATE attempts SET status = 'interrupted', finished_at = ?,
                       reason = 'the run stopped before this photo was committed' WHERE attempt_id = ?""",
                    (time.time(), attempt_id))
                count_kinds(self.db, "interrupted", None)
        return len(rows)
