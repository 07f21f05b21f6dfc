"""`rig jog RIG`: move channels from the keyboard and save the position as a named pose.

A curses screen, so it works over ssh and in tmux. Pulses are read back from the controller after
every key; angles are shown when the rig has a calibration. Saving a pose edits the rig file's
`poses:` in place with a round-trip YAML editor, keeping the operator's comments and layout. Every exit
(q, Ctrl-C, SIGTERM, a dropped ssh connection, a crash) parks the rig and turns its lights off
(`rig.cli.cmd_jog`).
"""

from __future__ import annotations

import curses
import io
import re
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML

from rig.calibration.angles import pulse_to_angle
from rig.calibration.file import CalibrationFile
from rig.config import RigConfig
from rig.devices import Motion
from rig.files import atomic_write

STEPS = (1, 5, 10, 50, 100)
REDRAW_MS = 200  # redraw while a move is under way
POSE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Row:
    name: str
    channel: int
    kind: str  # "servo" or "light"
    lo: int
    hi: int


class Jog:
    """The state behind the screen: selected row, step size, and what the controller reports."""

    def __init__(self, rig: RigConfig, rig_path: Path, motion: Motion, cal: CalibrationFile | None) -> None:
        self.rig, self.rig_path, self.motion, self.cal = rig, rig_path, motion, cal
        self.rows = [Row(n, s.channel, "servo", s.min, s.max) for n, s in rig.servos.items()]
        self.rows += [Row(n, lamp.channel, "light", 0, 255) for n, lamp in rig.lights.items()]
        self.selected = 0
        self.step = 10
        self.message = "arrows: select and move  1-5: step  s: save pose  p: park  q: quit"
        self.state = motion.state()

    def nudge(self, direction: int) -> None:
        row = self.rows[self.selected]
        if row.kind == "servo":
            now = self.state.targets[row.channel]
            target = max(row.lo, min(row.hi, now + direction * self.step))
            self.motion.move({row.channel: target}, 0)
            self.message = f"{row.name} -> {target} us"
        else:
            now = self.state.lights[row.channel]
            level = max(0, min(255, now + direction * self.step))
            self.motion.set_lights({row.channel: level})
            self.message = f"{row.name} -> {level}"
        self.state = self.motion.state()

    def refresh(self) -> None:
        self.state = self.motion.state()

    def angle(self, row: Row, pulse: float) -> str:
        fit = self.cal.angles.get(row.name) if self.cal else None
        if fit is None:
            return "   (no calibration)"

        return f"{pulse_to_angle(fit.coeffs, pulse):+8.2f} deg"

    def save_pose(self, name: str) -> str:
        if not POSE_NAME.match(name):
            return f"'{name}' is not a pose name (letters, digits, _ . -)"
        targets = {r.name: self.state.targets[r.channel] for r in self.rows if r.kind == "servo"}
        try:
            save_pose(self.rig_path, name, targets)
        except OSError as e:  # keep the session (and the position) alive; say what to do
            return f"could not save to {self.rig_path} ({e.strerror}); note the pulses above, fix permissions"
        return f"saved pose '{name}' to {self.rig_path.name}"

    def draw(self, scr: curses.window) -> None:
        scr.erase()
        scr.addstr(0, 0, f"rig jog: {self.rig.name}    step {self.step}    ({self.rig_path})")
        for i, r in enumerate(self.rows):
            if r.kind == "servo":
                pos, tgt = self.state.positions[r.channel], self.state.targets[r.channel]
                text = (f"{r.name:<16} servo {r.channel}  pulse {pos:5d} us  target {tgt:5d} us  "
                        f"{self.angle(r, pos)}   limits {r.lo}..{r.hi}")
            else:
                text = f"{r.name:<16} light {r.channel}  level {self.state.lights[r.channel]:3d}"
            scr.addstr(2 + i, 0, ("> " if i == self.selected else "  ") + text,
                       curses.A_REVERSE if i == self.selected else curses.A_NORMAL)
        moving = "moving" if self.state.moving else "still"
        scr.addstr(3 + len(self.rows), 0, f"controller: {moving}" + "".join(f", {note}" for note in self.state.notes))
        scr.addstr(5 + len(self.rows), 0, self.message)
        scr.refresh()

    def prompt(self, scr: curses.window, question: str) -> str | None:
        """Read a line at the bottom at the operator's pace (no redraw timeout); Esc cancels."""
        y = 6 + len(self.rows)
        curses.curs_set(1)
        scr.timeout(-1)
        text = ""
        while True:
            scr.move(y, 0)
            scr.clrtoeol()
            scr.addstr(y, 0, question + text)
            scr.refresh()
            key = scr.get_wch()
            if key in ("\n", "\r", curses.KEY_ENTER):
                break
            if key == "\x1b":
                text = ""
                break
            if key in (curses.KEY_BACKSPACE, "\x7f", "\b"):
                text = text[:-1]
            elif isinstance(key, str) and key.isprintable():
                text += key
        curses.curs_set(0)
        scr.timeout(REDRAW_MS)
        scr.move(y, 0)
        scr.clrtoeol()
        return text or None


def run(scr: curses.window, jog: Jog) -> None:
    curses.curs_set(0)
    scr.timeout(REDRAW_MS)
    while True:
        jog.draw(scr)
        try:
            key = scr.get_wch()
        except curses.error:
            jog.refresh()
            continue
        if key in ("q", "Q"):
            return
        if key in (curses.KEY_UP, "k"):
            jog.selected = (jog.selected - 1) % len(jog.rows)
        elif key in (curses.KEY_DOWN, "j"):
            jog.selected = (jog.selected + 1) % len(jog.rows)
        elif key in (curses.KEY_RIGHT, "l", "+"):
            jog.nudge(+1)
        elif key in (curses.KEY_LEFT, "h", "-"):
            jog.nudge(-1)
        elif isinstance(key, str) and key in "12345":
            jog.step = STEPS[int(key) - 1]
        elif key == "p":
            jog.motion.park()
            jog.message = "parked, lights off"
            jog.refresh()
        elif key == "s":
            name = jog.prompt(scr, "save pose as (Enter to save, Esc to cancel): ")
            jog.message = jog.save_pose(name) if name else "not saved"


def save_pose(rig_path: Path, name: str, targets: dict[str, int]) -> None:
    """Add or replace one pose in the rig file, keeping its comments and layout."""
    yaml = YAML()
    yaml.preserve_quotes = True
    data = yaml.load(rig_path.read_text())
    poses = data.setdefault("poses", {})
    from ruamel.yaml.comments import CommentedMap

    entry = CommentedMap(targets)
    entry.fa.set_flow_style()
    poses[name] = entry
    text = io.StringIO()
    yaml.dump(data, text)
    atomic_write(rig_path, text.getvalue())
