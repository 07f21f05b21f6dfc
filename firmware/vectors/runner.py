"""Run the rigctl conformance vectors against anything that speaks PROTOCOL.md on a serial port.

The same runner checks the real firmware (in simavr, through rigsim's pty) and the Python twin.
It uses pyserial directly so it does not depend on the host driver it is meant to check.

    from runner import run_vectors
    failures = run_vectors("/dev/pts/7", Path("firmware/vectors"))   # [] when all pass

or from a shell: ``python firmware/vectors/runner.py /dev/pts/7 [vectors_dir]``.
The file format is described in README.md beside this file.
"""

from __future__ import annotations

import binascii
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import serial

REPLY_TIMEOUT_S = 3.0
EVENT_TIMEOUT_S = 5.0
QUIET_S = 0.3  # how long "<none" listens for a reply that must not come


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE, as PROTOCOL.md specifies."""
    return binascii.crc_hqx(data, 0xFFFF)


def frame(seq: int, command: str, *, corrupt: bool = False) -> bytes:
    body = f"#{seq} {command}".encode("ascii")
    crc = crc16(body) ^ (0x0001 if corrupt else 0)
    return body + b"*%04X" % crc


def split_crc(line: bytes) -> tuple[bytes, bool]:
    """Split "<body>*XXXX" and check the CRC over body. Returns (body, crc_ok)."""
    m = re.fullmatch(rb"(.*)\*([0-9A-F]{4})", line, re.S)
    if not m:
        return line, False
    return m.group(1), crc16(m.group(1)) == int(m.group(2), 16)


_REPEAT = re.compile(r"\{(\d+)\*(.)\}")


def decode_request(text: str) -> bytes:
    r"""Request text -> bytes: "{N*c}" repeats c N times; \xNN, \r, \t and \\ are escapes."""
    text = _REPEAT.sub(lambda m: m.group(2) * int(m.group(1)), text)
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            n = text[i + 1]
            if n == "x":
                out.append(int(text[i + 2 : i + 4], 16))
                i += 4
                continue
            out += {"r": b"\r", "t": b"\t", "\\": b"\\"}.get(n, b"\\" + n.encode())
            i += 2
            continue
        out += c.encode("latin-1")
        i += 1
    return bytes(out)


@dataclass
class Session:
    """One open port: reads lines, files events away, hands back replies."""

    port: serial.Serial
    events: list[bytes] = field(default_factory=list)  # event bodies seen, without "!" and CRC
    bad_events: list[bytes] = field(default_factory=list)
    pending: bytearray = field(default_factory=bytearray)

    def _readline(self, deadline: float) -> bytes | None:
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.port.timeout = min(left, 0.05)
            chunk = self.port.read(max(1, self.port.in_waiting))
            self.pending += chunk
        line, _, rest = bytes(self.pending).partition(b"\n")
        self.pending = bytearray(rest)
        return line

    def _event(self, line: bytes) -> None:
        body, ok = split_crc(line)
        if ok:
            self.events.append(body[1:])  # without the "!"
        else:
            self.bad_events.append(b"event without a valid CRC: " + line)

    def send(self, data: bytes) -> None:
        self.port.write(data + b"\n")
        self.port.flush()

    def reply(self, timeout: float = REPLY_TIMEOUT_S) -> bytes | None:
        """The next non-event line, or None on time-out. Events are collected on the way."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._readline(deadline)
            if line is None:
                return None
            if line.startswith(b"!"):
                self._event(line)
                continue
            return line

    def wait_event(self, pattern: re.Pattern[bytes], timeout: float = EVENT_TIMEOUT_S) -> bytes | None:
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if pattern.fullmatch(ev):
                    del self.events[: i + 1]
                    return ev
            line = self._readline(deadline)
            if line is None:
                return None
            if line.startswith(b"!"):
                self._event(line)
            # a stray reply line while waiting for an event is a protocol error
            else:
                self.bad_events.append(b"unexpected reply: " + line)

    def resync(self, attempts: int = 6) -> bool:
        """PROTOCOL.md: send an empty line and hello; drop everything before the hello reply.

        Retried, because a controller that is still booting misses what it is sent.
        """
        self.pending.clear()
        self.port.reset_input_buffer()
        for _ in range(attempts):
            self.send(b"")
            self.send(b"hello")
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                line = self.reply(max(0.01, deadline - time.monotonic()))
                if line is not None and line.startswith(b"ok rigctl "):
                    # answers to a previous attempt's hello may still be on their way
                    while (extra := self.reply(0.05)) is not None:
                        if not extra.startswith(b"ok rigctl "):
                            break
                    self.events.clear()
                    return True
        return False


def _show(b: bytes | None) -> str:
    return "nothing (time-out)" if b is None else repr(b.decode("latin-1"))


def run_file(s: Session, path: Path) -> list[str]:
    """Run one vector file; stop at its first failure (later steps depend on earlier ones)."""
    if not s.resync():
        return [f"{path.name}: no answer to hello while resynchronising"]
    last_seq_reply: dict[int, bytes] = {}
    last_seq: int | None = None
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        where = f"{path.name}:{n}"
        line = raw.rstrip("\n")
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        op, _, arg = line.partition(" ")
        if op == ">":
            s.events.clear()
            s.send(decode_request(arg))
        elif op in (">#", ">#badcrc"):
            seq_text, _, cmd = arg.partition(" ")
            last_seq = int(seq_text)
            s.events.clear()
            s.send(frame(last_seq, cmd, corrupt=op == ">#badcrc"))
        elif op == "<":
            got = s.reply()
            if got is None or not re.fullmatch(arg.encode("latin-1"), got):
                return [f"{where}: expected reply /{arg}/, got {_show(got)}"]
        elif op == "<#":
            got = s.reply()
            seq_text, _, pattern = arg.partition(" ")
            if got is None:
                return [f"{where}: expected checked reply #{seq_text} /{pattern}/, got nothing"]
            body, ok = split_crc(got)
            if not ok:
                return [f"{where}: reply {_show(got)} lacks a valid *CRC"]
            want = f"#{seq_text} ".encode()
            if not body.startswith(want) or not re.fullmatch(pattern.encode(), body[len(want) :]):
                return [f"{where}: expected checked reply #{seq_text} /{pattern}/, got {_show(got)}"]
            last_seq_reply[int(seq_text)] = got
        elif op == "<#same":
            got = s.reply()
            seq = int(arg) if arg else last_seq
            want = last_seq_reply.get(seq) if seq is not None else None
            if want is None:
                return [f"{where}: vector error: no earlier checked reply for seq {seq}"]
            if got != want:
                return [f"{where}: retransmission should repeat {_show(want)} byte for byte, got {_show(got)}"]
        elif op == "<none":
            got = s.reply(QUIET_S)
            if got is not None:
                return [f"{where}: expected no reply, got {_show(got)}"]
        elif op == "!":
            ev = s.wait_event(re.compile(arg.encode("latin-1")))
            if ev is None:
                seen = ", ".join(_show(b"!" + e) for e in s.events) or "none"
                return [f"{where}: expected event !{arg} (events seen: {seen})"]
        elif op == "wait":
            time.sleep(float(arg) / 1000.0)
        else:
            return [f"{where}: vector error: unknown directive {op!r}"]
    if s.bad_events:
        return [f"{path.name}: malformed or unexpected lines: {[_show(e) for e in s.bad_events]}"]
    return []


def run_vectors(port_path: str, vectors_dir: Path | str | None = None, baudrate: int = 115200) -> list[str]:
    """Run every *.vec file in vectors_dir (sorted) against the device at port_path.

    Returns one failure message per failing file; an empty list means full conformance.
    """
    vdir = Path(vectors_dir) if vectors_dir is not None else Path(__file__).resolve().parent
    files = sorted(vdir.glob("*.vec"))
    if not files:
        return [f"no *.vec files in {vdir}"]
    failures: list[str] = []
    with serial.Serial(port_path, baudrate, timeout=0.05, write_timeout=2.0) as port:
        s = Session(port)
        for path in files:
            s.bad_events.clear()
            failures += run_file(s, path)
    return failures


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: runner.py PORT [VECTORS_DIR]", file=sys.stderr)
        return 2
    failures = run_vectors(argv[1], argv[2] if len(argv) > 2 else None)
    for f in failures:
        print("FAIL", f)
    print("conformance:", "ok" if not failures else f"{len(failures)} file(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
