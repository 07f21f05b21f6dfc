"""Every hint `rig` prints can be pasted into a fresh shell as it is, with or without the venv on PATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, RIG_BIN, rig_file, session_file

FRESH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # a login shell's, no venv


def _hint(session: Path, path: str) -> str:
    """The command `rig status` suggests for a session that has not started."""
    env = {**os.environ, "PATH": path}
    result = subprocess.run([*RIG_BIN, "status", str(session)], capture_output=True, text=True, cwd=REPO, env=env)
    assert result.returncode == 2, result.stderr
    return result.stderr.strip().split("start it with: ")[1]


def test_the_resume_hint_runs_as_printed_in_a_fresh_shell(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path), conditions=[{"pose": "front", "lighting": "dim"}])
    command = _hint(session, FRESH_PATH)
    # A new terminal somewhere else: no venv, no project folder as the working directory.
    fresh = subprocess.run(["env", "-i", f"HOME={tmp_path}", f"PATH={FRESH_PATH}", "bash", "-c", command + " --fast"],
                           capture_output=True, text=True, cwd="/", timeout=300)
    assert fresh.returncode == 0, f"{command!r} in a fresh shell: {fresh.stderr}"
    assert "8/8 done" in fresh.stderr


def test_the_hint_says_plain_rig_when_the_shell_finds_this_rig(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path))
    venv_bin = Path(sys.executable).parent
    assert _hint(session, f"{venv_bin}:{FRESH_PATH}") == f"rig run {session}"
    assert _hint(session, FRESH_PATH) == f"{venv_bin / 'rig'} run {session}"
