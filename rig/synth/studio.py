"""`studio`: the x-ray shown on the rig's monitor and photographed through the virtual studio.

The pose (servo pulses) and lamp levels are drawn inside the envelope of the rig file's named poses
and lighting presets, the envelope's share growing with the level (1/4 of it at level 1 around its
centre, all of it at level 4), so the synthetic photos match what that rig captures. `rig synth` is
not the capture path, so it may use the simulator (rig.sim) here.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from rig.errors import ConfigError
from rig.synth.base import Context, Params, Perturbation, register

if TYPE_CHECKING:
    from rig.config import RigConfig


@lru_cache(maxsize=4)
def load_rig(path: str) -> RigConfig:
    """The rig file with its poses in pulses, loaded once per process."""
    from rig.session import load_rig_for_run

    return load_rig_for_run(Path(path))


def envelope(rig: RigConfig) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]:
    """Per servo and per light: the (lowest, highest) value any named pose or lighting preset uses."""
    servos = {name: (float(min(p[name] for p in rig.poses.values() if name in p)),
                     float(max(p[name] for p in rig.poses.values() if name in p)))
              for name in rig.servos if any(name in p for p in rig.poses.values())}
    lights = {name: (float(min(p.get(name, 0) for p in rig.lighting.values())),
                     float(max(p.get(name, 0) for p in rig.lighting.values())))
              for name in rig.lights}
    return servos, lights


def _studio(img: np.ndarray, level: int, rng: np.random.Generator, ctx: Context) -> tuple[np.ndarray, Params]:
    from rig.images import letterbox_rect
    from rig.sim.studio import Scene, Studio

    if ctx.rig_path is None:
        raise ConfigError("studio: needs the rig file whose poses and lighting to sample; pass --rig FILE")
    rig = load_rig(ctx.rig_path)
    servos, lights = envelope(rig)
    share = level / 4
    pulses = [0.0] * (1 + max(s.channel for s in rig.servos.values()))
    for name, s in rig.servos.items():
        lo, hi = servos.get(name, (float(s.park), float(s.park)))
        mid, half = (lo + hi) / 2, (hi - lo) / 2 * share
        pulses[s.channel] = mid + rng.uniform(-half, half)
    levels = [0] * (1 + max((c.channel for c in rig.lights.values()), default=-1))
    for name, c in rig.lights.items():
        lo, hi = lights[name]
        levels[c.channel] = int(round(rng.uniform(lo, lo + (hi - lo) * share)))
    width, height = rig.display.width, rig.display.height
    rgb = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else img
    x0, y0, nw, nh = letterbox_rect(rgb.shape[1], rgb.shape[0], width, height)
    frame = np.zeros((height, width, 3), np.uint8)
    interp = cv2.INTER_AREA if nw < rgb.shape[1] else cv2.INTER_LINEAR
    frame[y0:y0 + nh, x0:x0 + nw] = cv2.resize(rgb, (nw, nh), interpolation=interp)
    studio = Studio(rig, seed=int(rng.integers(2**31)))  # its own sensor noise, drawn from this image's generator
    scene = Scene(frame, tuple(pulses), tuple(levels))
    pan, tilt = studio.camera_angles(scene.pulses)
    params = {"pan_deg": pan, "tilt_deg": tilt}
    params.update({f"light_{name}": float(levels[c.channel]) for name, c in sorted(rig.lights.items())})
    return studio.render(scene), params


register(Perturbation("studio", "a photo of the monitor through the virtual studio at a pose and lighting "
                      "drawn within the rig file's poses and presets (--rig FILE)",
                      ("1/4 of the poses' range", "1/2", "3/4", "all of it"),
                      ("pan_deg", "tilt_deg"), _studio))
