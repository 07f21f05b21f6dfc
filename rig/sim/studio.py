"""The virtual studio: the photo a camera on the rig's arm would take of the monitor, from physics.

World frame: millimetres, origin at the screen centre, x right, y down, z into the screen; the camera
sits at z < 0. Screen coordinates are continuous display pixels (the top-left pixel covers
[0, 1) x [0, 1)); photo coordinates follow OpenCV (integer = pixel centre).

The photo is built in linear light: the displayed frame (display gamma) warped into a pinhole camera
on the kinematic chain, modulated by the screen's pixel grid as the sensor samples it (moire), plus
the room light the screen reflects (veil), the mirror image of each lamp in the glass (glare), the
bezel and the wall; then exposure, lens distortion, defocus, vignetting, sensor noise, gamma, JPEG.
Where things are comes from the rig file's measured `geometry:` (with `sim.truth:` where the simulated
rig truly differs from its measurement) and which servo moves what from its `roles:`; how the servos
truly answer, the lens and every effect from its `sim:` section (each effect can be switched off).

Ground truth for tests and calibration: `camera_pose`, `camera_matrix`, `dist_coeffs`, `project`,
`screen_corners`, `screen_points`, `camera_angles`, `light_positions`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from rig.calibration.angles import pulse_to_angle
from rig.config import JointResponse, LampModel, RigConfig
from rig.errors import ConfigError

_DISPLAY_GAMMA = 2.2
_LIN = ((np.arange(256, dtype=np.float64) / 255.0) ** _DISPLAY_GAMMA).astype(np.float32)
_ENC_STEPS = 4095
_ENC = (255.0 * (np.arange(_ENC_STEPS + 1) / _ENC_STEPS) ** (1 / _DISPLAY_GAMMA)).astype(np.float32)
_BEZEL_ALBEDO = 0.05
_REFERENCE_MM = 700.0  # LightArmModel.power is the illuminance at this distance


@dataclass(frozen=True)
class Scene:
    """Everything a photo depends on, captured at the moment of exposure."""

    frame: np.ndarray  # RGB, what the display showed
    pulses: tuple[float, ...]  # servo pulses reached, by channel
    lights: tuple[int, ...]  # light levels, by channel


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _sinc(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.sinc(x)  # sin(pi x) / (pi x)
    return out


@dataclass
class _Pose:
    """Per-pose renderer state (cached: a session has a handful of poses)."""

    R: np.ndarray
    t: np.ndarray
    H: np.ndarray  # screen pixel index (centre = integer) -> undistorted photo index
    glass: np.ndarray  # float32 mask of the screen's front glass (screen + bezel)
    diffuse: np.ndarray  # float32: reflected room light per unit illuminance (screen, bezel, wall)
    screen_gain: np.ndarray  # float32 (h, w, 3): exposure x white balance x vignetting x moire
    room_gain: np.ndarray  # float32 (h, w, 3): exposure x white balance x vignetting (one array for every pose)
    blur_sigma: float


class Studio:
    """Geometry and light of the simulated rig -> photos, plus the ground truth behind them."""

    def __init__(self, rig: RigConfig, seed: int | None = None) -> None:
        self.rig = rig
        self.sim = rig.sim
        sim = rig.sim
        geometry = rig.true_geometry()
        if geometry is None:
            raise ConfigError(f"rig '{rig.name}': geometry: missing; the simulated studio renders the rig from "
                              "its measured geometry (monitor, camera_arm, sensor_width_mm, lamps); add 'geometry:'")
        self.geometry = geometry
        self._pan = rig.roles.pan if rig.roles else None
        self._tilt = rig.roles.tilt if rig.roles else None
        self._lamp_servo = dict(rig.roles.lamps) if rig.roles else {}
        self.rng = np.random.default_rng(sim.seed if seed is None else seed)
        self.photo_size = (sim.photo_width, sim.photo_height)
        self.display_size = (rig.display.width, rig.display.height)
        lens = sim.lens
        self.pixel_mm = geometry.sensor_width_mm / sim.photo_width  # sensor pixel size
        f = lens.focal_mm / self.pixel_mm
        cx = (sim.photo_width - 1) / 2 + lens.principal_offset_px[0]
        cy = (sim.photo_height - 1) / 2 + lens.principal_offset_px[1]
        self.camera_matrix = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]], np.float64)
        self.dist_coeffs = (np.array(lens.dist_coeffs, np.float64) if sim.effects.distortion
                            else np.zeros(5, np.float64))
        self._channel = {name: s.channel for name, s in rig.servos.items()}
        self._light_channel = {name: c.channel for name, c in rig.lights.items()}
        self._poses: OrderedDict[tuple[object, ...], _Pose] = OrderedDict()
        self._maps: tuple[np.ndarray, np.ndarray] | None = None
        self._vignette: np.ndarray | None = None
        self._room: np.ndarray | None = None
        self._noise_bank: np.ndarray | None = None

    # ------------------------------------------------------------ ground truth

    def joint_angle(self, servo: str | None, joint: JointResponse, pulses: tuple[float, ...]) -> float:
        """True angle in degrees of the joint `servo` drives, for the pulses the servos reached (0 without one)."""
        if servo is None or self._channel[servo] >= len(pulses):
            return 0.0
        return pulse_to_angle(joint.coeffs, float(pulses[self._channel[servo]]))

    def camera_angles(self, pulses: tuple[float, ...]) -> tuple[float, float]:
        """True (pan, tilt) of the camera arm in degrees."""
        arm = self.sim.arm
        return self.joint_angle(self._pan, arm.pan, pulses), self.joint_angle(self._tilt, arm.tilt, pulses)

    def camera_centre(self, pulses: tuple[float, ...]) -> np.ndarray:
        """Camera centre in world mm."""
        pan, tilt = (math.radians(a) for a in self.camera_angles(pulses))
        arm = self.geometry.camera_arm
        offset = np.array([math.sin(pan) * math.cos(tilt), -math.sin(tilt), -math.cos(pan) * math.cos(tilt)])
        return np.array(arm.pivot_mm, np.float64) + arm.radius_mm * offset

    def camera_pose(self, pulses: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(R, t) with x_cam = R @ x_world + t (OpenCV's convention, as solvePnP returns it)."""
        arm = self.sim.arm
        c = self.camera_centre(pulses)
        forward = np.array(self.geometry.camera_arm.pivot_mm, np.float64) - c
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, np.array([0.0, -1.0, 0.0]))
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        aim = np.stack([right, down, forward])  # rows: camera axes in world coordinates
        yaw, pitch, roll = (math.radians(a) for a in arm.mount_deg)
        R = _rot_z(roll) @ _rot_x(pitch) @ _rot_y(yaw) @ aim
        return R, -R @ c

    def lamp(self, name: str) -> LampModel:
        """How the lamp of light `name` truly answers and shines."""
        return self.sim.lights.get(name) or LampModel()

    def light_positions(self, pulses: tuple[float, ...]) -> dict[str, np.ndarray]:
        """Each lamp's centre in world mm, from its arm's servo (lamps the geometry places)."""
        out = {}
        for name, where in self.geometry.lamps.items():
            a = math.radians(self.joint_angle(self._lamp_servo.get(name), self.lamp(name), pulses))
            out[name] = np.array(where.pivot_mm, np.float64) + where.reach_mm * np.array([math.sin(a), 0, -math.cos(a)])
        return out

    def pitch_mm(self, width: int | None = None, height: int | None = None) -> tuple[float, float]:
        """Pixel pitch of the monitor showing a width x height frame."""
        w, h = width or self.display_size[0], height or self.display_size[1]
        mon = self.geometry.monitor
        return mon.width_mm / w, mon.height_mm / h

    def screen_to_world(self, uv: np.ndarray, width: int | None = None, height: int | None = None) -> np.ndarray:
        """Continuous screen pixel coordinates (N, 2) -> world mm (N, 3)."""
        w, h = width or self.display_size[0], height or self.display_size[1]
        px, py = self.pitch_mm(w, h)
        uv = np.asarray(uv, np.float64).reshape(-1, 2)
        return np.stack([(uv[:, 0] - w / 2) * px, (uv[:, 1] - h / 2) * py, np.zeros(len(uv))], axis=1)

    def project(self, points_world_mm: np.ndarray, pulses: tuple[float, ...], distort: bool = True) -> np.ndarray:
        """World points (N, 3) -> photo pixel coordinates (N, 2), with the lens distortion unless told."""
        R, t = self.camera_pose(pulses)
        pts = np.asarray(points_world_mm, np.float64).reshape(-1, 3)
        dist = self.dist_coeffs if distort else np.zeros(5)
        img, _ = cv2.projectPoints(pts, cv2.Rodrigues(R)[0], t, self.camera_matrix, dist)
        return img.reshape(-1, 2)

    def screen_points(self, pulses: tuple[float, ...], uv: np.ndarray, width: int | None = None,
                      height: int | None = None) -> np.ndarray:
        """Where continuous screen coordinates land in the photo (ground truth)."""
        return self.project(self.screen_to_world(uv, width, height), pulses)

    def screen_corners(self, pulses: tuple[float, ...], width: int, height: int, margin_px: float = 0) -> np.ndarray:
        """Where the frame's corners (grown by margin_px) land in the photo: TL, TR, BR, BL, float32."""
        m = margin_px
        uv = np.array([[-m, -m], [width + m, -m], [width + m, height + m], [-m, height + m]], np.float64)
        return self.screen_points(pulses, uv, width, height).astype(np.float32)

    def depth_mm(self, pulses: tuple[float, ...]) -> float:
        """Distance along the optical axis to the screen centre."""
        R, t = self.camera_pose(pulses)
        return float((R @ np.zeros(3) + t)[2])

    # ------------------------------------------------------------ rendering

    def _pose(self, pulses: tuple[float, ...], width: int, height: int) -> _Pose:
        key = (tuple(round(float(p), 1) for p in pulses), width, height)
        if key in self._poses:
            self._poses.move_to_end(key)
            return self._poses[key]
        sim, mon = self.sim, self.sim.monitor
        pw, ph = self.photo_size
        R, t = self.camera_pose(pulses)
        K = self.camera_matrix
        px, py = self.pitch_mm(width, height)
        # Screen continuous (u, v) -> world -> undistorted photo: a homography of the plane z = 0.
        S = np.array([[px, 0, -width / 2 * px], [0, py, -height / 2 * py], [0, 0, 1]])
        H_cont = K @ np.column_stack([R[:, 0], R[:, 1], t]) @ S
        H = H_cont @ np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])  # from pixel-centre indices

        def poly(margin_mm: float) -> np.ndarray:
            mu, mv = margin_mm / px, margin_mm / py
            q = np.array([[-mu, -mv, 1], [width + mu, -mv, 1], [width + mu, height + mv, 1], [-mu, height + mv, 1]]).T
            p = H_cont @ q
            corners: np.ndarray = (p[:2] / p[2]).T
            return corners

        def mask(quad: np.ndarray) -> np.ndarray:
            m = np.zeros((ph, pw), np.uint8)
            cv2.fillConvexPoly(m, np.round(quad * 16).astype(np.int32), 255, cv2.LINE_AA, shift=4)
            return m.astype(np.float32) / 255.0

        screen, monitor = mask(poly(0.0)), mask(poly(self.geometry.monitor.bezel_mm))
        yy = np.linspace(0.75, 1.15, ph, dtype=np.float32)[:, None]  # the wall: lit more towards the floor
        diffuse = screen * mon.reflectance + (monitor - screen) * _BEZEL_ALBEDO + (1 - monitor) * sim.wall_albedo * yy
        depth = float(t[2])
        sigma = self._blur_sigma(depth)
        room_gain = self._room_gain()
        if sim.effects.moire:
            screen_gain = self._moire(H_cont, screen, sigma)
            screen_gain *= room_gain
        else:
            screen_gain = room_gain
        pose = _Pose(R, t, H, monitor, diffuse.astype(np.float32), screen_gain, room_gain, sigma)
        self._poses[key] = pose
        if len(self._poses) > 6:
            self._poses.popitem(last=False)
        return pose

    def _blur_sigma(self, depth_mm: float) -> float:
        """Gaussian sigma (photo px) of lens softness plus defocus (thin lens circle of confusion)."""
        lens = self.sim.lens
        soft = lens.softness_um / 1000 / self.pixel_mm
        if not self.sim.effects.defocus:
            return soft
        f, s = lens.focal_mm, lens.focus_mm or self.geometry.camera_arm.radius_mm
        coc_mm = (f / lens.f_number) * abs(depth_mm - s) / depth_mm * f / max(1e-6, s - f)
        sigma_defocus = coc_mm / self.pixel_mm / 2.4  # a disc of diameter D ~ Gaussian of sigma D / 2.4
        return math.hypot(soft, sigma_defocus)

    def _moire(self, H_cont: np.ndarray, screen: np.ndarray, sigma: float) -> np.ndarray:
        """The screen's pixel grid (RGB stripes, black matrix) as the sensor samples it.

        The grid's fundamental (1 cycle per screen pixel) is attenuated by the sensor pixel's aperture
        (a box) and the optics (Gaussian MTF) at its true frequency, then evaluated at the sensor's
        pixel centres: what is left beats with the sampling grid, i.e. moire fringes whose period and
        curvature follow the projected pixel pitch.
        """
        sim, mon = self.sim, self.sim.monitor
        pw, ph = self.photo_size
        Hi = np.linalg.inv(H_cont).astype(np.float32)
        ap = sim.lens.sensor_fill

        def attenuation(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
            mtf = np.exp(np.float32(-2 * math.pi ** 2 * sigma ** 2) * (dx * dx + dy * dy))
            att: np.ndarray = _sinc(np.float32(ap) * dx) * _sinc(np.float32(ap) * dy) * mtf
            return att

        grid = np.empty((ph, pw, 3), np.float32)
        band = 128  # rows at a time: the float temporaries of a whole 24 MP photo would take gigabytes
        for y0 in range(0, ph, band):
            y1 = min(ph, y0 + band)
            xs, ys = np.meshgrid(np.arange(pw, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
            den = Hi[2, 0] * xs + Hi[2, 1] * ys + Hi[2, 2]
            u = (Hi[0, 0] * xs + Hi[0, 1] * ys + Hi[0, 2]) / den
            v = (Hi[1, 0] * xs + Hi[1, 1] * ys + Hi[1, 2]) / den
            # Derivatives of the projective map (screen pixels per sensor pixel), exact.
            dux, duy = (Hi[0, 0] - u * Hi[2, 0]) / den, (Hi[0, 1] - u * Hi[2, 1]) / den
            dvx, dvy = (Hi[1, 0] - v * Hi[2, 0]) / den, (Hi[1, 1] - v * Hi[2, 1]) / den
            au = np.float32(2 * np.sinc(mon.fill / 3)) * attenuation(dux, duy)  # one colour stripe per third of a px
            av = np.float32(2 * np.sinc(mon.fill)) * attenuation(dvx, dvy)  # black matrix between pixel rows
            mv = 1 + av * np.cos(np.float32(2 * np.pi) * v)
            inside = screen[y0:y1, :, None]
            out = grid[y0:y1]
            for c in range(3):
                mu = 1 + au * np.cos(np.float32(2 * np.pi) * (u - np.float32((c + 0.5) / 3)))
                out[..., c] = np.clip(mu * mv, 0, None)
            out[:] = out * inside + (1 - inside)
        return grid

    def _distortion_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """For each distorted photo pixel, where it comes from in the undistorted render (computed once)."""
        if self._maps is None:
            pw, ph = self.photo_size
            step = 8  # the map is smooth: solve it on a coarse grid (corners included) and interpolate
            gx, gy = np.arange(0, pw + step, step, dtype=np.float32), np.arange(0, ph + step, step, dtype=np.float32)
            xs, ys = np.meshgrid(gx, gy)
            pts = np.stack([xs.ravel(), ys.ravel()], axis=1).reshape(-1, 1, 2)
            K = self.camera_matrix
            und = cv2.undistortPoints(pts, K, self.dist_coeffs, None, None, K,
                                      (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 1e-9))
            und = und.reshape(len(gy), len(gx), 2)
            self._maps = self._coarse_to_fine(und, step, pw, ph)
        return self._maps

    @staticmethod
    def _coarse_to_fine(coarse: np.ndarray, step: int, pw: int, ph: int) -> tuple[np.ndarray, np.ndarray]:
        """Bilinear interpolation of a map sampled every `step` px (grid point k at pixel k * step)."""
        xs = np.arange(pw, dtype=np.float32) / step
        ys = np.arange(ph, dtype=np.float32) / step
        mx, my = np.meshgrid(xs, ys)
        out = [cv2.remap(np.ascontiguousarray(coarse[..., i]), mx, my, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE) for i in range(2)]
        return out[0], out[1]

    def _vignetting(self) -> np.ndarray:
        """cos^4 fall-off of the field angle, scaled by the vignetting strength (computed once)."""
        if self._vignette is None:
            pw, ph = self.photo_size
            K = self.camera_matrix
            xs, ys = np.meshgrid((np.arange(pw) - K[0, 2]) / K[0, 0], (np.arange(ph) - K[1, 2]) / K[1, 1])
            cos4 = 1.0 / (1.0 + xs ** 2 + ys ** 2) ** 2
            self._vignette = (1 - self.sim.vignetting * (1 - cos4)).astype(np.float32)
        return self._vignette

    def _room_gain(self) -> np.ndarray:
        """Exposure x white balance x vignetting per photo pixel: the same at every pose (computed once)."""
        if self._room is None:
            sim = self.sim
            pw, ph = self.photo_size
            gain = np.float32(sim.exposure_gain) * np.asarray(sim.white_balance, np.float32)[None, None, :]
            if sim.effects.vignetting and sim.vignetting:
                gain = self._vignetting()[..., None] * gain
            self._room = np.ascontiguousarray(np.broadcast_to(gain, (ph, pw, 3)), np.float32)
        return self._room

    def illuminance(self, scene: Scene) -> float:
        """Room light falling on the screen: ambient plus each lamp (inverse square, cosine)."""
        total = self.sim.ambient
        for name, pos in self.light_positions(scene.pulses).items():
            level = self._level(scene, name)
            d = float(np.linalg.norm(pos))
            cos_i = abs(pos[2]) / d
            total += level * self.lamp(name).power * (_REFERENCE_MM / d) ** 2 * cos_i
        return total

    def _level(self, scene: Scene, light: str) -> float:
        ch = self._light_channel.get(light)
        return 0.0 if ch is None or ch >= len(scene.lights) else scene.lights[ch] / 255.0

    def _glare(self, scene: Scene, pose: _Pose) -> np.ndarray:
        """The lamps' mirror images in the glass: a disc per lamp spread by the coating's roughness."""
        mon = self.sim.monitor
        pw, ph = self.photo_size
        step = 4
        # Sample at the centres of the step x step cells so resizing back does not shift the highlight.
        yy, xx = (np.mgrid[0:ph:step, 0:pw:step] + (step - 1) / 2).astype(np.float32)
        small = np.zeros_like(xx)
        c = self.camera_centre(scene.pulses)
        f = self.camera_matrix[0, 0]
        for name, pos in self.light_positions(scene.pulses).items():
            level = self._level(scene, name)
            if level <= 0:
                continue
            lamp = self.lamp(name)
            mirror = pos * np.array([1.0, 1.0, -1.0])
            cam = pose.R @ mirror + pose.t
            if cam[2] <= 0:
                continue
            gx, gy = self.project(mirror[None], scene.pulses, distort=False)[0]
            dist = float(np.linalg.norm(mirror - c))
            r_disc = f * lamp.lamp_radius_mm / dist
            # A rough surface tilts the mirror by ~roughness: the image moves by twice that, seen from
            # the lamp's distance to the glass.
            r_rough = f * 2 * math.tan(math.radians(mon.roughness_deg)) * abs(pos[2]) / dist
            s2 = (r_disc / 2) ** 2 + r_rough ** 2 + 1.0
            peak = mon.gloss * lamp.radiance * level * (r_disc ** 2 / 4) / s2
            small += peak * np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * s2))
        glare: np.ndarray = cv2.resize(small, (pw, ph), interpolation=cv2.INTER_LINEAR) * pose.glass
        return glare

    def render_linear(self, scene: Scene) -> np.ndarray:
        """The exposure on the sensor in linear units (1.0 = full scale), before noise and tone curve."""
        sim = self.sim
        h, w = scene.frame.shape[:2]
        pw, ph = self.photo_size
        pose = self._pose(scene.pulses, w, h)
        warped = cv2.warpPerspective(np.ascontiguousarray(scene.frame), pose.H, (pw, ph), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        emission = cv2.LUT(warped, _LIN)  # display gamma -> linear light
        reflected = pose.diffuse * np.float32(self.illuminance(scene))
        if sim.effects.glare:
            reflected += self._glare(scene, pose)
        # Exposure, white balance and vignetting (the field angle of the undistorted ray) are folded into
        # per-pose gain fields; the moire modulates only the screen's own light.
        # Channel by channel and in place: a photo's float temporaries are what the simulator's memory peaks on.
        img = emission
        img *= pose.screen_gain
        for c in range(3):
            img[..., c] += reflected * pose.room_gain[..., c]
        del emission, reflected
        if sim.effects.distortion:
            mx, my = self._distortion_maps()
            img = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if pose.blur_sigma > 0.3:
            cv2.GaussianBlur(img, (0, 0), pose.blur_sigma, dst=img)
        return img

    def render(self, scene: Scene) -> np.ndarray:
        """The photo as an RGB uint8 array: tone curve, then read and shot noise in 8-bit units."""
        sim = self.sim
        img = self.render_linear(scene)
        img *= np.float32(_ENC_STEPS)
        np.clip(img, 0, _ENC_STEPS, out=img)
        idx = img.astype(np.uint16)
        del img
        out = np.take(_ENC, idx)  # the camera's tone curve (sRGB-like), float 8-bit units
        if sim.effects.noise and (sim.noise or sim.shot_noise):
            sigma = np.sqrt(sim.noise ** 2 + sim.shot_noise * _ENC).astype(np.float32)
            noise = np.take(sigma, idx)
            noise *= self._noise()
            out += noise
            del noise
        out += np.float32(0.5)
        np.clip(out, 0, 255, out=out)
        return out.astype(np.uint8)

    def _noise(self) -> np.ndarray:
        """Unit Gaussian noise for one photo: a random window of a bank drawn once (drawing 6 million
        normals per photo would cost more than the rest of the render)."""
        pw, ph = self.photo_size
        pad = 97
        if self._noise_bank is None:
            self._noise_bank = self.rng.standard_normal((ph + pad, pw + pad, 3), dtype=np.float32)
        dy, dx = (int(v) for v in self.rng.integers(0, pad, 2))
        return self._noise_bank[dy:dy + ph, dx:dx + pw]

    def jpeg(self, scene: Scene) -> bytes:
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(self.render(scene), cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, self.sim.jpeg_quality])
        assert ok
        return data.tobytes()
