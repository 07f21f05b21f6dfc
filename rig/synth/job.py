"""One output image: read once, run the chain with the image's own generator, write atomically.

Everything here runs in a worker (a local process or a Dask worker), so it takes and returns plain,
picklable values and never raises for a bad image: the image fails alone with its reason.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from rig.files import atomic_write
from rig.images import decode_image
from rig.synth.base import Context, chain_dir, image_rng, registry

JPEG_QUALITY = 95
TMP_DIR = ".synth-tmp"  # inside --out (same file system, so rename is atomic); emptied on every start
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Spec:
    """What every output depends on, besides the image itself."""

    chain: tuple[str, ...]
    level: int
    seed: int
    out: str  # absolute path of --out (a shared file system path on a Dask cluster)
    rig_path: str | None = None


@dataclass(frozen=True)
class Item:
    image_id: str
    file: str  # where to read the image
    rel: str  # where to write it, relative to --out


@dataclass(frozen=True)
class Outcome:
    image_id: str
    ok: bool
    params: dict[str, float] | None = None
    reason: str = ""
    write_error: bool = False  # the disk, not the image: the run must stop


def split_of(source: str) -> str:
    """CheXphoto's <split> folder: the manifest path's train/valid/test component ('train' if none)."""
    parts = source.split("/")
    return next((p for p in reversed(parts[:-1]) if p in SPLITS), "train")


def output_rel(spec: Spec, image_id: str, source: str) -> str:
    """<chain>/level_<n>/<split>/patientX/studyY/viewZ.jpg (CheXphoto's tree), relative to --out."""
    rel = PurePosixPath(image_id)
    if rel.parts and rel.parts[0] in SPLITS:  # a folder manifest that holds the split itself
        rel = PurePosixPath(*rel.parts[1:])
    return f"{chain_dir(spec.chain)}/level_{spec.level}/{split_of(source)}/{rel.with_suffix('.jpg')}"


def column_names(chain: tuple[str, ...]) -> list[str]:
    """Prefix of each chain step's parameter columns: the name, numbered when the chain repeats it."""
    return [f"{n}{chain[:i + 1].count(n)}" if chain.count(n) > 1 else n for i, n in enumerate(chain)]


_configured = False


def exit_with(parent_pid: int) -> None:
    """Pool initializer: end this worker when the `rig synth` process is gone. After a kill -9 nothing
    else would: the worker waits on a task queue whose write end it holds itself, and it keeps the
    forkserver and resource tracker alive with it."""
    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()



def _configure() -> None:
    global _configured
    if not _configured:
        cv2.setNumThreads(1)  # one image per core: the pool, not OpenCV, uses the cores
        _configured = True


def perturb(spec: Spec, image_id: str, img: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Run the chain on a decoded grey image with this image's generator; returns the image and params."""
    reg = registry()
    rng = image_rng(spec.seed, image_id, spec.chain, spec.level)
    ctx = Context(spec.rig_path)
    params: dict[str, float] = {}
    for name, prefix in zip(spec.chain, column_names(spec.chain)):
        img, drawn = reg[name].apply(img, spec.level, rng, ctx)
        params.update({f"{prefix}_{k}": float(v) for k, v in drawn.items()})
    return img, params


def encode(img: np.ndarray) -> bytes:
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def write_atomically(out: str, rel: str, data: bytes) -> None:
    """The final path holds the whole image or nothing, also after a power cut (the journal line that
    follows must never name an image whose rename was lost). The temp file lives in TMP_DIR, which
    every start empties, so a kill leaves no stray file in the output tree."""
    tmp = Path(out, TMP_DIR, f"{os.getpid()}-{uuid.uuid4().hex}.jpg")
    atomic_write(Path(out, rel), data, make_dirs=True, tmp=tmp)


def process(spec: Spec, item: Item) -> Outcome:
    _configure()
    try:
        img = decode_image(item.file, "gray")
    except ValueError as e:
        return Outcome(item.image_id, False, reason=str(e))
    try:
        out, params = perturb(spec, item.image_id, img)
        jpeg = encode(out)
    except Exception as e:  # one bad image must not stop the run: it fails alone, with its reason
        return Outcome(item.image_id, False, reason=f"{type(e).__name__}: {e}")
    try:
        write_atomically(spec.out, item.rel, jpeg)
    except OSError as e:
        return Outcome(item.image_id, False, reason=f"cannot write {item.rel} ({e.strerror})", write_error=True)
    return Outcome(item.image_id, True, params)


def process_batch(spec: Spec, items: list[Item]) -> list[Outcome]:
    """Several small images per task: fewer round trips to the pool or the scheduler."""
    return [process(spec, it) for it in items]
