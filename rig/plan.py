"""The plan: a frozen value saying what a session will capture, which the run store persists.

A Plan is its conditions (labels with resolved servo targets and light levels) times the manifest's
images times `repeats`. Item order is condition-major: every repeat of every image under one
condition, then the next condition. Conditions that share a pose are kept next to each other, so a
session of C conditions moves the camera arm at most C times, however many images it has.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from rig.manifest import Manifest, ManifestRow
from rig.session import Session


@dataclass(frozen=True)
class PlannedCondition:
    """A condition as planned: its label plus the resolved servo targets and light levels."""

    label: str
    pose: str
    lighting: str
    targets: dict[int, int]
    lights: dict[int, int]

    def key(self) -> str:
        """What makes two conditions the same capture: a changed key is a changed plan."""
        return json.dumps([self.label, self.pose, self.lighting, sorted(self.targets.items()),
                           sorted(self.lights.items())])


@dataclass(frozen=True)
class Plan:
    """conditions x the manifest's images x repeats; the manifest is read row by row, never held."""

    manifest: Manifest
    conditions: tuple[PlannedCondition, ...]
    repeats: int
    window: tuple[float, float] | None = None  # how 12- to 16-bit images are shown (None: their own VOI/range)

    @classmethod
    def of(cls, session: Session, manifest: Manifest) -> Plan:
        window = session.config.window.pair() if session.config.window else None
        return cls(manifest, tuple(planned_conditions(session)), session.config.repeats, window)


def planned_conditions(session: Session) -> list[PlannedCondition]:
    """The session's conditions with resolved targets and levels, grouped by pose (stable order)."""
    rig = session.rig
    resolved = [PlannedCondition(c.label, c.pose, c.lighting, rig.pose_targets(c.pose), rig.light_levels(c.lighting))
                for c in session.config.conditions]
    pose_order = list(dict.fromkeys(c.pose for c in resolved))
    return sorted(resolved, key=lambda c: pose_order.index(c.pose))


class ManifestDigest:
    """Hash of every row's identity, source path and labels, fed row by row. The bytes hashed are those
    of one `update` per row; they are gathered a few thousand rows at a time (one hash call per batch,
    same digest) because a call per row costs half a second over 223,414 rows."""

    def __init__(self, manifest: Manifest) -> None:
        self._h = hashlib.sha256("\x1f".join(manifest.label_columns).encode())  # starts from the label columns
        self._batch: list[str] = []

    def add(self, row: ManifestRow) -> None:
        self._batch.append("\x1e".join((row.image_id, row.source, *row.labels)))
        if len(self._batch) == 4096:
            self._flush()

    def add_fields(self, image_id: str, source: str, labels: str | None) -> None:
        """`add` for a row in pieces: `labels` already joined by '\x1e' (None: no label columns)."""
        self._batch.append(f"{image_id}\x1e{source}" if labels is None else f"{image_id}\x1e{source}\x1e{labels}")
        if len(self._batch) == 4096:
            self._flush()

    def _flush(self) -> None:
        if self._batch:
            self._h.update(("\x1d".join(self._batch) + "\x1d").encode())
            self._batch.clear()

    def hexdigest(self) -> str:
        self._flush()
        return self._h.hexdigest()


DIGEST_FORMAT = "manifest digest 1"  # change when digest_row changes: remembered digests then no longer apply


def manifest_digest(manifest: Manifest) -> tuple[str, int]:
    """Hash of every row's identity, source path and labels, plus the row count.

    Reading every row also checks the whole manifest; a CSV whose bytes were read (and found good) before
    is not read again (Manifest.recall): a resume starts in well under its 2 s."""
    known = manifest.recall(DIGEST_FORMAT)
    if known is not None and isinstance(known.get("digest"), str) and isinstance(known.get("rows"), int):
        return known["digest"], known["rows"]
    h = ManifestDigest(manifest)
    n = 0
    for row in manifest.rows(keep=True):  # kept: a new run's store takes the rows without a second parse
        h.add(row)
        n += 1
    manifest.remember(DIGEST_FORMAT, {"digest": h.hexdigest(), "rows": n})
    return h.hexdigest(), n
