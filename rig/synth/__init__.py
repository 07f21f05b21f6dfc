"""`rig synth`: CheXphoto's synthetic transformations of digital x-rays, reproducible and resumable.

One module per perturbation family (tone, blur, geometry, glare, moire, film, studio), the registry
in `base`, one image's work in `job`, the resumable output journal in `journal`, and the runner over
a local process pool or a Dask cluster in `runner`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PUBLISHED_SETS = ("digital", "photographic")  # rig.synth.base.SETS names them


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The subcommand's flags (issue 11's command line); importing this costs nothing for other commands."""
    p.add_argument("--list", action="store_true", help="name every perturbation with its levels")
    p.add_argument("--csv", type=Path, help="CheXpert-form manifest (with --image-root)")
    p.add_argument("--image-root", type=Path, help="folder the manifest's Path values are relative to")
    p.add_argument("--folder", type=Path, help="a folder of images instead of a manifest")
    p.add_argument("--out", type=Path, help="output folder (CheXphoto's tree and CSVs)")
    p.add_argument("--set", choices=PUBLISHED_SETS, help="a published set: digital or photographic")
    p.add_argument("--chain", help="perturbations applied in order, e.g. glare_matte,moire,tilt")
    p.add_argument("--level", default="1", help="severity 1-4")
    p.add_argument("--seed", type=int, default=0, help="outputs depend only on (seed, image, chain, level)")
    p.add_argument("--workers", type=int, default=None, help="local processes (none given: every core)")
    p.add_argument("--scheduler", help="address of a Dask distributed scheduler, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--rig", type=Path, help="rig file whose poses and lighting 'studio' samples")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from rig.synth.runner import main as run

    return run(args)
