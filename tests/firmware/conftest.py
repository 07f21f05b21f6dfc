"""Firmware-in-the-loop fixtures: build rigctl.elf, run it in simavr (rigsim), talk over its pty.

Nothing here is mocked: the compiled AVR binary runs in simavr, bytes go through a real
pseudo-terminal, and pulse widths are measured on the simulated pins by the harness.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fwsim import ELF, FIRMWARE, RIGSIM, Sim


@pytest.fixture(scope="session")
def firmware_build() -> Path:
    """Build (or confirm up to date) the firmware and the simulator harness."""
    missing = [t for t in ("avr-gcc", "make", "pkg-config") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: run `sudo firmware/install-deps.sh` first", pytrace=False)
    res = subprocess.run(["make", "-C", str(FIRMWARE)], capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        pytest.fail(f"make -C firmware failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}", pytrace=False)
    return ELF


@pytest.fixture
def start_sim(firmware_build: Path, tmp_path: Path):
    """Factory: start_sim(realtime=False, wait_host=False, eeprom=None) -> Sim. All are stopped after the test."""
    sims: list[Sim] = []

    def start(realtime: bool = False, wait_host: bool = False, eeprom: Path | None = None) -> Sim:
        n = len(sims)
        pins = tmp_path / f"pins{n}.txt"
        pulses = tmp_path / f"pulses{n}.txt"
        ee = eeprom or tmp_path / "eeprom.bin"
        cmd = [str(RIGSIM), "--pins", str(pins), "--pulses", str(pulses), "--eeprom", str(ee)]
        if realtime:
            cmd.append("--realtime")
        if wait_host:
            cmd.append("--wait-host")
        proc = subprocess.Popen(cmd + [str(firmware_build)], stdout=subprocess.PIPE, text=True)
        first = proc.stdout.readline()
        m = re.fullmatch(r"pty (\S+)\n", first)
        if not m:
            proc.kill()
            pytest.fail(f"rigsim did not print its pty: {first!r}", pytrace=False)
        sim = Sim(proc, m.group(1), pins, pulses, ee)
        sims.append(sim)
        return sim

    yield start
    for s in sims:
        s.stop()


@pytest.fixture
def sim(start_sim) -> Sim:
    return start_sim()


