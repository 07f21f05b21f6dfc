"""A hard dependency that does not import must fail the tests that need it, never skip them silently."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gphoto2_tests_fail_when_gphoto2_is_not_installed(tmp_path: Path) -> None:
    shadow = tmp_path / "gphoto2"
    shadow.mkdir()
    (shadow / "__init__.py").write_text(  # what Python raises when the package is not installed
        "raise ModuleNotFoundError('gphoto2 is not installed here', name='gphoto2')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--co",
                             "tests/test_gphoto2cam.py", "tests/test_gphoto2_session.py"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode not in (0, 5), result.stdout  # 0: collected (or skipped), 5: nothing collected
    assert "gphoto2 is not installed here" in result.stdout, result.stdout
