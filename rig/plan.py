"""Session -> planned conditions in motion-friendly order; the store expands them into items.

Item order is condition-major: every repeat of every image under one condition, then the next
condition. Conditions that share a pose are kept next to each other, so a session of C conditions
moves the camera arm at most C times, however many images it has.
"""

from __future__ import annotations

from rig.session import Session
from rig.store import PlannedCondition


def planned_conditions(session: Session) -> list[PlannedCondition]:
    """The session's conditions with resolved targets and levels, grouped by pose (stable order)."""
    rig = session.rig
    resolved = [PlannedCondition(c.label, c.pose, c.lighting, rig.pose_targets(c.pose), rig.light_levels(c.lighting))
                for c in session.config.conditions]
    pose_order = list(dict.fromkeys(c.pose for c in resolved))
    return sorted(resolved, key=lambda c: pose_order.index(c.pose))
