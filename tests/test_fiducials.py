"""Every frame id the display can spell is read back as itself from a photo of the simulated studio.

A frame id is three digit markers (ids 4..999) plus four corner markers (ids 0..3), and QA reads
each marker on its own and places it by position. So "every id decodes to itself" needs exactly:
every marker id in use is read as itself, and never as another id, wherever a pose puts it, and the
digit arithmetic round-trips. Each marker is photographed once, on a grid of markers of the
layout's size and spacing (about 40 per photo instead of 6), shuffled over the rig's poses.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import rig_file

from rig.config import QAConfig, RigConfig, load_rig
from rig.fiducials import (
    CORNER_IDS,
    DIGIT_BASE,
    DIGITS,
    digits_frame_id,
    draw_fiducials,
    fiducial_layout,
    frame_id_digits,
    marker_image,
)
from rig.images import prepare
from rig.qa import Expected, PhotoQA
from rig.sim.studio import Scene, Studio

IDS_IN_USE = sorted({*CORNER_IDS, *range(4, 4 + DIGIT_BASE)})


def _pulses(rig: RigConfig, pose: str) -> tuple[float, ...]:
    pulses = [1500.0] * len(rig.servos)
    for ch, us in rig.pose_targets(pose).items():
        pulses[ch] = float(us)
    return tuple(pulses)


def _lights(rig: RigConfig, preset: str) -> tuple[int, ...]:
    levels = rig.light_levels(preset)
    return tuple(levels.get(ch, 0) for ch in range(max(levels) + 1))


def _grid_photos(rig: RigConfig, studio: Studio, pose: str,
                 ids: list[int]) -> Iterator[tuple[np.ndarray, list[int], np.ndarray]]:
    """Photos of the screen covered by markers at the layout's size and spacing, with the true
    photo position of every marker's centre."""
    w, h = rig.display.width, rig.display.height
    layout = fiducial_layout(w, h)
    m, pitch = layout.marker, layout.marker + 2 * layout.quiet
    cells = [(x, y) for y in range(layout.quiet, h - m, pitch) for x in range(layout.quiet, w - m, pitch)]
    pulses, lights = _pulses(rig, pose), _lights(rig, "bright")
    for start in range(0, len(ids), len(cells)):
        chunk = ids[start:start + len(cells)]
        canvas = np.zeros((h, w, 3), np.uint8)
        for marker_id, (x, y) in zip(chunk, cells):
            canvas[y:y + m, x:x + m] = marker_image(marker_id, m)[..., None]
        centres = studio.screen_points(pulses, np.array([[x + m / 2, y + m / 2] for x, y in cells[:len(chunk)]]))
        jpeg = studio.jpeg(Scene(canvas, pulses, lights))
        yield cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE), chunk, centres


@pytest.mark.parametrize("size", ["test", "demo"])
def test_every_marker_in_use_is_read_as_itself_through_the_studio(tmp_path: Path, size: str) -> None:
    """Every marker once, shuffled over the poses: on the suite's small rig (600x450 photos), and on
    the demo's 1280x1024 screen photographed at 800x600."""
    overrides: dict[str, object] = {}
    if size == "demo":
        overrides = {"display": {"width": 1280, "height": 1024}, "sim": {"photo_width": 800, "photo_height": 600}}
    rig = load_rig(rig_file(tmp_path, **overrides))
    studio = Studio(rig)
    qa = PhotoQA(QAConfig())
    ids = IDS_IN_USE[:]
    random.Random(28).shuffle(ids)
    poses = list(rig.poses)
    misread: list[str] = []
    missed: list[str] = []
    photos = 0
    for n, pose in enumerate(poses):
        for gray, chunk, centres in _grid_photos(rig, studio, pose, ids[n::len(poses)]):
            photos += 1
            corners, found = qa._detect(gray)
            read: dict[int, list[int]] = {}
            for c, marker_id in zip(corners, [] if found is None else found.ravel()):
                d = np.linalg.norm(centres - c.reshape(4, 2).mean(axis=0), axis=1)
                read.setdefault(int(np.argmin(d)), []).append(int(marker_id))
            for k, marker_id in enumerate(chunk):
                got = read.get(k, [])
                if any(g != marker_id for g in got):
                    misread.append(f"{pose}: {marker_id} read as {sorted(set(got) - {marker_id})}")
                elif not got:
                    missed.append(f"{pose}: {marker_id}")
    print(f"\n{photos} photos of {len(IDS_IN_USE)} markers: "
          f"{len(misread)} misread, {len(missed)} not found")
    assert misread == []
    assert missed == []


def test_digit_arithmetic_round_trips_at_every_digit_value_and_the_ends() -> None:
    top = DIGIT_BASE ** DIGITS - 1
    for frame_id in (0, 1, top, top - 1, 684, 684 + 996, *(d * DIGIT_BASE ** p for d in range(DIGIT_BASE)
                                                           for p in range(DIGITS))):
        if frame_id <= top:
            assert digits_frame_id(frame_id_digits(frame_id)) == frame_id
    with pytest.raises(ValueError):
        frame_id_digits(top + 1)


def test_whole_frames_through_qa_read_back_their_own_id(tmp_path: Path, phantoms: Path) -> None:
    """The full chain on real frames: the ids that used to be misread, and the extremes."""
    rig = load_rig(rig_file(tmp_path))
    studio = Studio(rig)
    qa = PhotoQA(QAConfig())
    w, h = rig.display.width, rig.display.height
    layout = fiducial_layout(w, h)
    shown = prepare(next((phantoms / "CheXpert-v1.0-small").rglob("*.jpg")), w, h, band=layout.band)
    for pose in rig.poses:
        for frame_id in (684, 684 + 996 * 5, 0, DIGIT_BASE ** DIGITS - 1):
            frame = draw_fiducials(shown.canvas, frame_id, layout)
            jpeg = studio.jpeg(Scene(frame, _pulses(rig, pose), _lights(rig, "bright")))
            photo = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            verdict = qa.check(photo, Expected(frame_id, layout, shown.xray, shown.source_size))
            assert verdict.frame_id == frame_id, f"{pose}: frame {frame_id} read as {verdict.frame_id}"
