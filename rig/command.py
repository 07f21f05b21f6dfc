"""How the operator's shell reaches this `rig`, for the commands that hints print.

`make setup` installs `rig` into the project's venv, which a fresh shell does not have on its PATH.
A hint must work when pasted as it is printed: plain `rig` when PATH finds this very installation,
else the full path of the venv's `rig` script.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from functools import cache
from pathlib import Path


@cache
def rig_command() -> str:
    script = Path(sys.executable).parent / "rig"  # not resolved: a venv's python is a symlink
    if not script.is_file():
        return f"{shlex.quote(sys.executable)} -m rig.cli"
    found = shutil.which("rig")
    if found and os.path.samefile(found, script):
        return "rig"
    return shlex.quote(str(script))
