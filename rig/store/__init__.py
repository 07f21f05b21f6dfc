"""The run store: SQLite (WAL) beside a photo tree, with exactly-once captures across kill -9.

One module per part, each readable on its own:
  schema.py    tables, version, upgrades from older stores, the read-only check before opening
  base.py      the open store: folder, connection, transactions, meta
  plan.py      persisting rig.plan.Plan: create, what changed, replan keeping matching captures
  writes.py    captures: journal the attempt, write its files atomically, commit it
  recovery.py  what a crash left half-written
  queries.py   reading a run (pending items, counts, failures, accepted captures)
  context.py   the rig's context, retransmissions, pauses
RunStore is all of them on one connection.
"""

from __future__ import annotations

from rig.store.context import RunContext
from rig.store.plan import PlanRecords
from rig.store.records import REASON_KIND, Capture, Counts, Item
from rig.store.recovery import Recovery
from rig.store.schema import DB_NAME, SCHEMA_VERSION
from rig.store.writes import CaptureWrites


class RunStore(PlanRecords, CaptureWrites, Recovery, RunContext):
    """One run's database and photo tree. Only one thread writes; readers open their own RunStore."""


__all__ = ["DB_NAME", "REASON_KIND", "SCHEMA_VERSION", "Capture", "Counts", "Item", "RunStore"]
