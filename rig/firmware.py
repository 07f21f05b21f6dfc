"""`rig firmware build|flash`: build rigctl from Debian's AVR packages and flash it with avrdude."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from rig.command import rig_command
from rig.errors import RigError

FIRMWARE = Path(__file__).resolve().parents[1] / "firmware"
HEX = FIRMWARE / "build" / "rigctl.hex"


def build() -> None:
    if shutil.which("avr-gcc") is None:
        raise RigError("avr-gcc not found; install the toolchain: sh firmware/install-deps.sh")
    if subprocess.run(["make", "-C", str(FIRMWARE)]).returncode != 0:
        raise RigError("firmware build failed; see the compiler output above")


def flash_command(port: str, hex_file: Path = HEX, baud: int = 115200) -> list[str]:
    """avrdude through the Uno/Nano bootloader (STK500v1 'arduino' programmer); -D: no chip erase."""
    return ["avrdude", "-p", "atmega328p", "-c", "arduino", "-P", port, "-b", str(baud), "-D",
            "-U", f"flash:w:{hex_file}:i"]


def flash(port: str, hex_file: Path = HEX, baud: int = 115200) -> None:
    if not hex_file.exists():
        raise RigError(f"{hex_file}: no firmware image; build it first: {rig_command()} firmware build")
    if shutil.which("avrdude") is None:
        raise RigError("avrdude not found; install it: apt-get install avrdude")
    if not Path(port).exists() and "://" not in port:
        raise RigError(f"--port {port}: no such device; check the cable ({rig_command()} doctor lists serial ports)")
    if subprocess.run(flash_command(port, hex_file, baud)).returncode != 0:
        raise RigError(f"avrdude could not flash {port}; check the board type and port, see its output above")
