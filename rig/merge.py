"""Whether the runs of shards (see rig/shard.py) may be exported as one data set.

They may when they are parts of one plan: no image in two of them, and every photo taken under the
same conditions (pose, lighting, servo targets, light levels, repeats), the same QA thresholds and
the same calibration (as each run recorded it when it started). Anything else would make one
captures.csv describe photos that were not taken alike, so the export refuses it with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict

from rig.errors import RigError
from rig.session import Session
from rig.store import RunStore


class MergeRefused(RigError):
    """The runs given to `rig export --merge` are not shards of one plan."""


def _conditions(store: RunStore) -> str:
    return json.dumps([asdict(c) for c in store.conditions().values()], sort_keys=True)


def _qa(session: Session) -> str:
    c = session.config
    return json.dumps({"qa": c.qa.model_dump(mode="json"), "fiducials": c.fiducials}, sort_keys=True)


def _calibration(store: RunStore) -> str:
    """The run's recorded contexts without their time stamps and rig names: the calibration in force,
    its angle fits and the channels' roles (each shard may run on a rig of its own name)."""
    return json.dumps(sorted({json.dumps({k: v for k, v in c.items() if k not in ("at", "rig")}, sort_keys=True)
                              for c in store.contexts()}))


def _check_split(runs: Sequence[tuple[Session, RunStore]]) -> None:
    """Shards written by `rig shard` merge only all together: every shard 1..N of one split, once each.
    (Runs that are no shards, e.g. sessions an operator split by hand, are judged by the other checks.)"""
    shards = [(session, session.config.shard) for session, _ in runs]
    marked = [(session, s) for session, s in shards if s is not None]
    if not marked:
        return
    first_session, first = marked[0]
    for session, s in shards:
        if s is None or (s.split, s.of) != (first.split, first.of):
            raise MergeRefused(f"{session.path}: not a shard of the same `rig shard` split as {first_session.path}; "
                               "merge the shards of one split; nothing was written")
    given = sorted(s.index for _, s in marked)
    if len(set(given)) != len(given):
        raise MergeRefused(f"shard {next(i for i in given if given.count(i) > 1)} of {first.of} is given twice; "
                           "name each shard once; nothing was written")
    missing = sorted(set(range(1, first.of + 1)) - set(given))
    if missing:
        names = ", ".join(f"shard-{i}-of-{first.of}.yaml" for i in missing)
        raise MergeRefused(f"{first_session.path}: the split has {first.of} shards and {names} "
                           f"{'is' if len(missing) == 1 else 'are'} not given; a data set without them would "
                           "silently lack their patients: give every shard; nothing was written")


def check_mergeable(runs: Sequence[tuple[Session, RunStore]]) -> None:
    """Refuse, naming the first run that does not fit the first one and why, runs that are not shards of one plan."""
    first_session, first = runs[0]
    roots = [store.root.resolve() for _, store in runs]
    for i, root in enumerate(roots):
        if root in roots[:i]:
            raise MergeRefused(f"{runs[i][0].path}: its run {root} is given twice; name each shard's session once; "
                               "nothing was written")
    facts = {
        "conditions (pose, lighting, servo targets, light levels)": _conditions,
        "repeats": lambda s: s.meta("repeats") or "",
        "label columns": lambda s: s.meta("label_columns") or "[]",
        "display window (window:)": lambda s: s.meta("window") or "null",
        "calibration (as recorded when the run started)": _calibration,
    }
    for session, store in runs[1:]:
        for what, of in facts.items():
            if of(store) != of(first):
                raise MergeRefused(f"{session.path}: its run has other {what} than {first_session.path}'s; "
                                   "only shards of one session with one calibration merge; nothing was written")
        if _qa(session) != _qa(first_session):
            raise MergeRefused(f"{session.path}: other QA thresholds (qa:, fiducials:) than {first_session.path}; "
                               "only shards of one session merge; nothing was written")
    owner: dict[str, int] = {}
    for i, (session, store) in enumerate(runs):
        for (image_id,) in store.db.execute("SELECT image_id FROM images"):
            j = owner.setdefault(image_id, i)
            if j != i:
                raise MergeRefused(f"{session.path}: its run overlaps {runs[j][0].path}'s: image {image_id} is in "
                                   "both; merge only shards of one split (rig shard); nothing was written")
    _check_split(runs)
