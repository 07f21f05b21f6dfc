"""Run the rigctl conformance vectors against anything that speaks PROTOCOL.md on a serial port.

The same runner checks the firmware in simavr (through rigsim's pty) and its protocol core built for
the PC (rigctl-host, the simulated rig's controller).
It uses pyserial directly so it does not depend on the host driver it is meant to check.

Besides the *.vec files it is the one place that checks the protocol's edges: it reads the
"Argument ranges" table of ../PROTOCOL.md and generates, for every row, the boundary cases (see
`edge_cases`), so a range decided in PROTOCOL.md is held against every implementation.

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
PROTOCOL_MD = Path(__file__).resolve().parent.parent / "PROTOCOL.md"
MAX_DIGITS = 9  # PROTOCOL.md "Words, numbers and the order of checks"


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE, as PROTOCOL.md specifies."""
    return binascii.crc_hqx(data, 0xFFFF)


def frame(seq: int | str, command: str, *, corrupt: bool = False) -> bytes:
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
    return run_lines(s, path.name, path.read_text().splitlines())


def run_lines(s: Session, name: str, lines: list[str]) -> list[str]:
    """Run vector directives (the *.vec format); stop at the first failure."""
    if not s.resync():
        return [f"{name}: no answer to hello while resynchronising"]
    last_seq_reply: dict[int, bytes] = {}
    last_seq: int | None = None
    sent = ""  # the last request, named in failures
    for n, raw in enumerate(lines, 1):
        line = raw.rstrip("\n")
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        op, _, arg = line.partition(" ")
        if op.startswith(">"):
            sent = line
        where = f"{name}:{n} (after {sent!r})" if sent else f"{name}:{n}"
        if op == ">":
            s.events.clear()
            s.send(decode_request(arg))
        elif op in (">#", ">#badcrc"):
            seq_text, _, cmd = arg.partition(" ")  # sent as written: edges use "007", "-1", ...
            last_seq = int(seq_text) if seq_text.isdigit() else None
            s.events.clear()
            s.send(frame(seq_text, cmd, corrupt=op == ">#badcrc"))
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
        elif op == "!none":
            pattern = re.compile(arg.encode("latin-1"))
            seen = [e for e in s.events if pattern.fullmatch(e)]
            if seen:
                got = _show(b"!" + seen[0])
                return [f"{where}: no event /{arg}/ may have arrived since the last request, got {got}"]
        elif op == "wait":
            time.sleep(float(arg) / 1000.0)
        else:
            return [f"{where}: vector error: unknown directive {op!r}"]
    if s.bad_events:
        return [f"{name}: malformed or unexpected lines: {[_show(e) for e in s.bad_events]}"]
    return []


def range_table(protocol_md: Path = PROTOCOL_MD) -> list[dict[str, str]]:
    """The rows of PROTOCOL.md's "Argument ranges" table: argument, example, range, outside, malformed."""
    rows = []
    in_table = False
    for line in protocol_md.read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if line.startswith("| argument | example | range |"):
            in_table = True
        elif in_table and line.startswith("|") and not line.startswith("|---"):
            rows.append(dict(zip(("argument", "example", "range", "outside", "malformed"), cells)))
        elif in_table and not line.startswith("|"):
            break
    if not rows:
        raise ValueError(f"{protocol_md}: no 'Argument ranges' table")
    return rows


def _bound(text: str, names: dict[str, int]) -> int:
    """"12", "servos-1", "max" -> a number, with names from the controller."""
    m = re.fullmatch(r"(\d+|[a-z]+)(?:-(\d+))?", text.strip())
    if not m:
        raise ValueError(f"PROTOCOL.md range bound {text!r}")
    base = int(m.group(1)) if m.group(1).isdigit() else names[m.group(1)]
    return base - int(m.group(2) or 0)


def edge_cases(row: dict[str, str], names: dict[str, int]) -> list[str]:
    """Vector lines for one argument: in-range edges pass, every other kind gets its error."""
    lo_text, _, hi_text = row["range"].partition("..")
    lo, hi = _bound(lo_text, names), _bound(hi_text, names)
    accepted = [str(lo), str(hi), str(lo).zfill(MAX_DIGITS)]
    outside = [str(v) for v in (lo - 1, hi + 1, 10**MAX_DIGITS - 1) if v >= 0 and not lo <= v <= hi]
    malformed = [str(lo).zfill(MAX_DIGITS + 1), str(10**MAX_DIGITS), "-1", "+1", "1.0", "0x1", "1e3", "x"]
    checked = row["example"].startswith("#")
    out = [f"// {row['argument']}: {row['range']} ({lo}..{hi})"]

    def request(value: str) -> str:
        text = row["example"].replace("{}", value)
        if checked:
            seq, _, cmd = text[1:].partition(" ")
            return f"># {seq} {cmd}"
        return f"> {text}"

    for v in accepted:
        out += [request(v), f"<# {int(v)} ok( .*)?" if checked else "< ok( .*)?"]
    for v in outside:
        out += [request(v), "< " + re.escape(row["outside"])]
    for v in malformed:
        out += [request(v), "< " + re.escape(row["malformed"])]
    return out


# Put back what the edge cases change (vector files expect default limits and rest positions).
_EDGE_RESTORE = ["> limit 3 1000 2000 1500 1000", "< ok", "> timeout 10000", "< ok", "> light 0:0 1:0", "< ok",
                 "> move 0 0:1500 1:1500 2:1500 3:1500", "< ok \\d+", "! done"]


def run_edges(s: Session, protocol_md: Path = PROTOCOL_MD) -> list[str]:
    """Check every argument range of PROTOCOL.md at its edges; one failure message or none."""
    name = f"{protocol_md.name} argument ranges"
    if not s.resync():
        return [f"{name}: no answer to hello while resynchronising"]
    s.send(b"hello")
    hello = (s.reply() or b"").decode("latin-1")
    s.send(b"limit 0")
    limit0 = (s.reply() or b"").decode("latin-1")
    try:
        names = {k: int(v) for k, v in re.findall(r"(servos|lights|min|max)=(\d+)", hello + " " + limit0)}
        lines = [line for row in range_table(protocol_md) for line in edge_cases(row, names)]
    except (KeyError, ValueError) as e:
        return [f"{name}: cannot generate the edge cases ({e}); hello: {hello!r}, limit 0: {limit0!r}"]
    return run_lines(s, name, lines + _EDGE_RESTORE)


def run_vectors(port_path: str, vectors_dir: Path | str | None = None, baudrate: int = 115200,
                edges: bool = True) -> list[str]:
    """Run every *.vec file in vectors_dir (sorted), then PROTOCOL.md's argument edges (unless
    edges=False), against the device at port_path.

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
        if edges:
            s.bad_events.clear()
            failures += run_edges(s)
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
