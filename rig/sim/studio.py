"""The simulated studio: what a camera on the rig's arm would photograph of the monitor.

Geometry: the screen is a plane of known size; the camera orbits the screen's centre on a pan/tilt
arm whose angles follow the servo pulses *actually* reached (not what the host asked for), looking
at the centre through a pinhole. The photo is the displayed frame (with its bezel) warped into the
camera, over a room lit by the rig's lights: light raises the room and adds a veil over the screen,
and each light arm leaves a soft glare spot that moves with the arm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from rig.config import RigConfig


@dataclass(frozen=True)
class Scene:
    """Everything a photo depends on, captured at the moment of exposure."""

    frame: np.ndarray  # RGB, what the display showed
    pulses: tuple[float, ...]  # servo pulses reached, by channel
    lights: tuple[int, ...]  # light levels, by channel


def _look_at(pan_deg: float, tilt_deg: float, distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotation (world -> camera) and centre of a camera on the arm, aimed at the screen centre."""
    p, t = math.radians(pan_deg), math.radians(tilt_deg)
    centre = distance * np.array([math.sin(p) * math.cos(t), -math.sin(t), -math.cos(p) * math.cos(t)])
    forward = -centre / np.linalg.norm(centre)
    right = np.cross(forward, np.array([0.0, -1.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward]), centre


class Studio:
    """Renders photos of the monitor for a rig file's geometry."""

    def __init__(self, rig: RigConfig, seed: int = 0) -> None:
        self.rig = rig
        self.sim = rig.sim
        self.rng = np.random.default_rng(seed)
        self.pan_ch = rig.servos["camera_pan"].channel if "camera_pan" in rig.servos else None
        self.tilt_ch = rig.servos["camera_tilt"].channel if "camera_tilt" in rig.servos else None
        self.arm_chs = [s.channel for n, s in rig.servos.items() if n not in ("camera_pan", "camera_tilt")]

    def camera_angles(self, pulses: tuple[float, ...]) -> tuple[float, float]:
        pan = (pulses[self.pan_ch] - 1500) * self.sim.pan_deg_per_us if self.pan_ch is not None else 0.0
        tilt = (pulses[self.tilt_ch] - 1500) * self.sim.tilt_deg_per_us if self.tilt_ch is not None else 0.0
        return pan, tilt

    def screen_corners(self, pulses: tuple[float, ...], width: int, height: int, margin_px: float = 0) -> np.ndarray:
        """Where the frame's corners (grown by margin_px) land in the photo: ground truth for tests."""
        pitch = self.sim.pixel_pitch_mm
        R, c = _look_at(*self.camera_angles(pulses), self.sim.camera_distance_mm)
        xs = np.array([-margin_px, width + margin_px, width + margin_px, -margin_px])
        ys = np.array([-margin_px, -margin_px, height + margin_px, height + margin_px])
        world = np.stack([(xs - width / 2) * pitch, (ys - height / 2) * pitch, np.zeros(4)], axis=1)
        cam = (world - c) @ R.T
        f, cx, cy = self.sim.focal_px, self.sim.photo_width / 2, self.sim.photo_height / 2
        return np.stack([f * cam[:, 0] / cam[:, 2] + cx, f * cam[:, 1] / cam[:, 2] + cy], axis=1).astype(np.float32)

    def render(self, scene: Scene) -> np.ndarray:
        """The photo as an RGB uint8 array."""
        sim = self.sim
        h, w = scene.frame.shape[:2]
        bezel = round(sim.bezel_mm / sim.pixel_pitch_mm)
        framed = cv2.copyMakeBorder(scene.frame, bezel, bezel, bezel, bezel, cv2.BORDER_CONSTANT, value=(28, 28, 30))
        src = np.float32([[0, 0], [w + 2 * bezel, 0], [w + 2 * bezel, h + 2 * bezel], [0, h + 2 * bezel]])
        dst = self.screen_corners(scene.pulses, w, h, margin_px=bezel)
        H = cv2.getPerspectiveTransform(src, dst)
        size = (sim.photo_width, sim.photo_height)
        level = (sum(scene.lights) / (255.0 * max(1, len(scene.lights))))
        room = 12 + 110 * level
        mask = cv2.warpPerspective(np.full(framed.shape[:2], 255, np.uint8), H, size, flags=cv2.INTER_LINEAR)
        photo = cv2.warpPerspective(framed, H, size, flags=cv2.INTER_LINEAR).astype(np.float32)
        # Emission of the screen, a veil of room light over it, the room where there is no monitor.
        a = mask.astype(np.float32)[..., None] / 255.0
        photo = photo * (0.82 + 0.1 * level) + 30 * level
        photo = photo * a + (1 - a) * np.float32([room, room * 0.97, room * 0.92])
        photo += self._glare(scene, dst)
        photo += self.rng.normal(0, sim.noise, photo.shape[:2])[..., None] if sim.noise else 0
        return np.clip(photo, 0, 255).astype(np.uint8)

    def _glare(self, scene: Scene, screen: np.ndarray) -> np.ndarray:
        """A soft highlight per lit light, placed along the screen by its arm's angle."""
        sim = self.sim
        glare = np.zeros((sim.photo_height, sim.photo_width, 1), np.float32)
        yy, xx = np.mgrid[0:sim.photo_height:4, 0:sim.photo_width:4].astype(np.float32)
        small = np.zeros_like(xx)
        for i, level in enumerate(scene.lights):
            if not level or i >= len(self.arm_chs):
                continue
            arm = (scene.pulses[self.arm_chs[i]] - 1500) / 600  # -1..1 across the screen
            u = 0.5 + 0.4 * max(-1.0, min(1.0, arm))
            top_edge = screen[0] * (1 - u) + screen[1] * u  # the point u of the way along the top edge
            bottom_edge = screen[3] * (1 - u) + screen[2] * u
            cx, cy = top_edge * 0.65 + bottom_edge * 0.35  # a third of the way down
            sigma = 0.02 * abs(bottom_edge[1] - top_edge[1]) + 1
            small += 70 * (level / 255) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))
        glare[..., 0] = cv2.resize(small, (sim.photo_width, sim.photo_height), interpolation=cv2.INTER_LINEAR)
        return glare

    def jpeg(self, scene: Scene) -> bytes:
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(self.render(scene), cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, self.sim.jpeg_quality])
        assert ok
        return data.tobytes()
