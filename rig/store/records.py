"""The values the store hands out and takes in: a planned item, a capture's record, the counts."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from rig.plan import PlannedCondition

REASON_KIND = re.compile(r"(?:^|; )([a-z][a-z -]*):")  # "exposure: 12% ...; sharpness: ..." -> exposure, sharpness


@dataclass(frozen=True)
class Item:
    """One planned capture joined with its image and condition (loaded a page at a time)."""

    seq: int
    rep: int
    attempts: int
    image_id: str
    study_id: str
    file: Path
    condition: PlannedCondition


@dataclass(frozen=True)
class Counts:
    planned: int
    done: int
    failed: int
    pending: int
    failed_attempts: int


@dataclass(frozen=True)
class Capture:
    """Where an attempt's files go and what was recorded about the rig when it was taken."""

    seq: int
    started_at: float
    commanded: dict[int, int]
    readback: dict[str, object]
    lights: dict[int, int]
    frame_id: int | None = None  # the id the display's markers spelled for this attempt
    # Seconds per stage (move, settle, trigger, download, qa; the store adds write): where the time went.
    timing: dict[str, float] = field(default_factory=dict)
