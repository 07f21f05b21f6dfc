"""The perturbation registry, the published sets and the per-image random generator.

A perturbation maps a uint8 image (grey H x W or RGB H x W x 3) to a uint8 image plus the parameters
it drew, so the CSV can say exactly what was done to each image. Sizes that are a fraction of the
picture (glare spots, shifts, blur radii) are CheXphoto's pixel values read at 640 px wide and scaled
with the image width, so a level means the same look at every resolution (at CheXpert-small's 320 px
CheXphoto's level-4 glare would cover the whole picture; at 2048 px its level-1 blur would vanish).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from rig.errors import ConfigError

LEVELS = (1, 2, 3, 4)
REFERENCE_WIDTH = 640.0

Params = dict[str, float]


@dataclass(frozen=True)
class Context:
    """What a perturbation may need beyond the image: the rig file for `studio`."""

    rig_path: str | None = None  # each worker loads it once (it travels as a path, not an object)


Apply = Callable[[np.ndarray, int, np.random.Generator, Context], tuple[np.ndarray, Params]]


@dataclass(frozen=True)
class Perturbation:
    name: str
    summary: str
    levels: tuple[str, str, str, str]  # what each level means, for `rig synth --list`
    params: tuple[str, ...]  # the parameters it draws: CSV columns <name>_<param>
    apply: Apply = field(repr=False)


REGISTRY: dict[str, Perturbation] = {}

# CheXphoto's published sets: Synthetic-Digital and Synthetic-Photographic.
SETS: dict[str, tuple[str, ...]] = {
    "digital": ("random-digital",),
    "photographic": ("glare_matte", "moire", "tilt"),
}


def per_level(texts: Iterable[str]) -> tuple[str, str, str, str]:
    """Perturbation.levels from a generator: exactly one text per level (LEVELS), checked on import."""
    one, two, three, four = texts
    return one, two, three, four


def register(p: Perturbation) -> Perturbation:
    REGISTRY[p.name] = p
    return p


def registry() -> dict[str, Perturbation]:
    """Every perturbation, its module imported (one per family)."""
    from rig.synth import blur, film, geometry, glare, moire, studio, tone  # noqa: F401  (they register)

    return {name: REGISTRY[name] for name in sorted(REGISTRY, key=_ORDER.index)}


# CheXphoto's order, then the two of our own.
_ORDER = ["moire", "blur", "motion", "glare_matte", "glare_glossy", "tilt", "brightness_up", "brightness_down",
          "contrast_up", "contrast_down", "identity", "random-digital", "rotation", "translation", "exposure",
          "film", "studio"]


def parse_chain(text: str) -> tuple[str, ...]:
    """'glare_matte,moire,tilt' -> names, refusing unknown ones in one line."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    known = registry()
    if not names:
        raise ConfigError("--chain: name at least one perturbation; 'rig synth --list' names them")
    for n in names:
        if n not in known:
            raise ConfigError(f"--chain: unknown perturbation '{n}'; known: {', '.join(known)} "
                              f"('rig synth --list' shows their levels)")
    return names


def chain_dir(chain: tuple[str, ...]) -> str:
    """CheXphoto's layout: one folder per perturbation of the chain, in order."""
    return "/".join(chain)


def image_rng(seed: int, image_id: str, chain: tuple[str, ...], level: int) -> np.random.Generator:
    """The generator for one output image: a function of (seed, image ID, chain, level) only, so the
    output does not depend on which worker draws it or in which order."""
    digest = hashlib.sha256(f"{image_id}\0{','.join(chain)}\0{level}".encode()).digest()
    words = np.frombuffer(digest, dtype="<u4").tolist()
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32, *words]))


def scale(img: np.ndarray) -> float:
    """Image width relative to the 640 px that the pixel parameters are given for."""
    width: int = img.shape[1]
    return width / REFERENCE_WIDTH


def row_blocks(h: int, w: int) -> list[slice]:
    """Row bands of about 128 K pixels: per-pixel float work done band by band stays in the CPU cache
    (a 2048 x 2500 float image is 20 MB; numpy on it is memory-bound)."""
    rows = max(1, 131072 // max(w, 1))
    return [slice(y, min(h, y + rows)) for y in range(0, h, rows)]
