"""The virtual studio's photos change as physics says: glare follows the lamp's mirror image, moire
comes from the pixel grid, perspective follows the arm; its ground truth is consistent."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
from conftest import rig_file

from rig.config import load_rig
from rig.sim.studio import Scene, Studio

FRONT = (1500.0, 1500.0, 1200.0, 1800.0)  # camera pan, tilt, left lamp arm, right lamp arm


def _studio(tmp_path: Path, **effects: bool) -> Studio:
    off = {"noise": False, "glare": False, "moire": False, "vignetting": False}
    off.update(effects)
    return Studio(load_rig(rig_file(tmp_path, sim={"effects": off})))


def _grey(studio: Studio, level: int = 128) -> np.ndarray:
    w, h = studio.display_size
    return np.full((h, w, 3), level, np.uint8)


def test_glare_sits_on_the_mirror_image_of_the_lamp_and_moves_with_its_arm(tmp_path: Path) -> None:
    studio = _studio(tmp_path, glare=True)
    frame = _grey(studio, 40)
    dark = studio.render_linear(Scene(frame, FRONT, (0, 0)))[..., 1]
    spots = []
    for arm in (1150.0, 1250.0, 1350.0):
        pulses = (1500.0, 1500.0, arm, 1800.0)
        lit = studio.render_linear(Scene(frame, pulses, (255, 0)))[..., 1]
        glare = np.clip(lit - dark - np.median(lit - dark), 0, None)  # minus the veil, which is uniform
        ys, xs = np.nonzero(glare > 0.5 * glare.max())
        spot = np.array([xs.mean(), ys.mean()])
        lamp = studio.light_positions(pulses)["left"]
        mirror = lamp * [1, 1, -1]  # reflected in the screen plane z = 0
        expected = studio.project(mirror[None], pulses)[0]
        assert np.linalg.norm(spot - expected) < 3, (spot, expected)
        spots.append(spot)
    moves = np.diff(np.array(spots)[:, 0])
    assert (moves > 5).all()  # the arm swings the lamp right: its reflection moves right in the photo


def test_moire_appears_at_the_default_distance_and_vanishes_when_switched_off(tmp_path: Path) -> None:
    def screen_texture(studio: Studio) -> tuple[float, float]:
        img = studio.render_linear(Scene(_grey(studio), FRONT, (0, 0)))[..., 1]
        c = studio.screen_corners(FRONT, *studio.display_size)
        x0, x1 = int(c[:, 0].min()) + 20, int(c[:, 0].max()) - 20
        y0, y1 = int(c[:, 1].min()) + 20, int(c[:, 1].max()) - 20
        patch = img[y0:y1, x0:x1] / img[y0:y1, x0:x1].mean() - 1
        row = patch.mean(axis=0)  # vertical fringes: the beat of screen columns against sensor columns
        spectrum = np.abs(np.fft.rfft(row - row.mean()))
        freq = np.fft.rfftfreq(len(row))[int(np.argmax(spectrum))]
        return float(patch.std()), float(freq)

    with_moire, beat = screen_texture(_studio(tmp_path, moire=True))
    without, _ = screen_texture(_studio(tmp_path, moire=False))
    studio = _studio(tmp_path)
    pitch_px = studio.camera_matrix[0, 0] * studio.pitch_mm()[0] / studio.depth_mm(FRONT)  # screen px on the sensor
    predicted = abs(1 / pitch_px - round(1 / pitch_px))  # aliased grid frequency, cycles per sensor pixel
    print(f"\nmoire: {with_moire:.3f} contrast with the effect, {without:.4f} without; "
          f"beat {beat:.3f} c/px, predicted {predicted:.3f} (screen pixel = {pitch_px:.3f} sensor px)")
    assert with_moire > 0.02 and without < 0.003
    assert abs(beat - predicted) < 0.25 * predicted


def test_perspective_follows_the_pose(tmp_path: Path) -> None:
    studio = _studio(tmp_path)
    w, h = studio.display_size
    white = _grey(studio, 255)
    heights = {}
    for name, pan in (("left", 1320.0), ("front", 1500.0), ("right", 1680.0)):
        pulses = (pan, 1500.0, 1200.0, 1800.0)
        img = studio.render(Scene(white, pulses, (0, 0)))
        mask = (cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) > 128).astype(np.uint8)
        contour = max(cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0], key=cv2.contourArea)
        quad = cv2.approxPolyDP(contour, 0.02 * cv2.arcLength(contour, True), True).reshape(-1, 2)
        truth = studio.screen_corners(pulses, w, h)
        assert len(quad) == 4
        for corner in truth:  # each true corner has a detected corner within 2 px
            assert np.linalg.norm(quad - corner, axis=1).min() < 2.0
        heights[name] = (truth[3, 1] - truth[0, 1], truth[2, 1] - truth[1, 1])  # left edge, right edge
    # Swung to the left, the camera is nearer the screen's left edge, which looks taller; and vice versa.
    assert heights["left"][0] > heights["left"][1] * 1.05
    assert heights["right"][1] > heights["right"][0] * 1.05
    assert math.isclose(heights["front"][0], heights["front"][1], rel_tol=0.02)


def test_ground_truth_is_what_solvepnp_recovers_from_the_projection(tmp_path: Path) -> None:
    """The API issue 6 builds calibration on: pose, intrinsics and projection agree with OpenCV."""
    studio = Studio(load_rig(rig_file(tmp_path)))
    pulses = (1320.0, 1480.0, 1100.0, 1700.0)
    u, v = np.meshgrid(np.linspace(0, studio.display_size[0], 7), np.linspace(0, studio.display_size[1], 5))
    world = studio.screen_to_world(np.stack([u.ravel(), v.ravel()], axis=1))
    image = studio.project(world, pulses)
    ok, rvec, tvec = cv2.solvePnP(world, image, studio.camera_matrix, studio.dist_coeffs)
    R, t = studio.camera_pose(pulses)
    assert ok and np.allclose(cv2.Rodrigues(rvec)[0], R, atol=1e-6) and np.allclose(tvec.ravel(), t, atol=1e-3)
    pan, tilt = studio.camera_angles(pulses)
    arm = studio.sim.arm
    assert math.isclose(pan, arm.pan.deg_per_us * (1320 - arm.pan.zero_us))
    centre = -R.T @ t
    radius = studio.geometry.camera_arm.radius_mm
    assert np.allclose(centre, studio.camera_centre(pulses)) and math.isclose(np.linalg.norm(centre), radius)
    assert np.allclose(studio.screen_corners(pulses, *studio.display_size),
                       studio.screen_points(pulses, np.array([[0, 0], [studio.display_size[0], 0],
                                                              [*studio.display_size], [0, studio.display_size[1]]])),
                       atol=1e-3)
