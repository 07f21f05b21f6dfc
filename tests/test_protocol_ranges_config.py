"""A rig file cannot ask the controller for a time PROTOCOL.md's argument ranges refuse."""

import shutil

import pytest
from conftest import REPO

from rig.config import load_rig
from rig.errors import RigError


@pytest.mark.parametrize("key", ["host_timeout_ms", "move_ms"])
def test_times_above_the_protocol_cap_are_refused_with_their_line(tmp_path, key) -> None:
    rig = tmp_path / "rig.yaml"
    shutil.copy(REPO / "calibration" / "sim-rig.yaml", rig)
    text = rig.read_text()
    line = next(n for n, t in enumerate(text.splitlines(), 1) if t.strip().startswith(f"{key}:"))
    rig.write_text("\n".join(t.split(":")[0] + ": 3600001" if n == line else t
                             for n, t in enumerate(text.splitlines(), 1)) + "\n")
    with pytest.raises(RigError) as e:
        load_rig(rig)
    assert f":{line}" in str(e.value) and key in str(e.value), str(e.value)
    rig.write_text(text.replace(f"{key}: ", f"{key}: 3600000 #", 1))
    load_rig(rig)  # the cap itself is allowed
