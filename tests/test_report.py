"""`rig report SESSION`: one page to look at, checked in a real browser (Debian's headless Chromium).

The run behind it has every kind of attempt an operator meets: accepted photos, photos QA rejected
(a lagging display shows the wrong frame now and then), items that failed (an image missing from
the image folder) and a pause (a QA preset so strict that two items in a row failed the same check).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from conftest import REPO, rig_file, run_rig, session_file

ARTIFACTS = REPO / "tests" / "artifacts"
STAGES = {"move", "settle", "trigger", "download", "qa", "write"}


@pytest.fixture(scope="module")
def shot(tmp_path_factory: pytest.TempPathFactory, phantoms: Path) -> Path:
    """A finished run with accepted, rejected and failed attempts and one pause; returns its session file."""
    d = tmp_path_factory.mktemp("report")
    data = d / "data"
    shutil.copytree(phantoms, data)
    with open(data / "train.csv", newline="") as f:
        missing = next(csv.DictReader(f))["Path"]
    (data / missing).unlink()
    rig = rig_file(d)
    session = session_file(d, data, rig, retries=0, failure_streak=2, qa={"min_sharpness": 50.0})
    first = run_rig("run", str(session))
    assert first.returncode == 3 and "consecutive items" in first.stderr, first.stderr
    # Now and then the photo shows the previous frame, and the controller's line is noisy.
    rig_file(d, sim={"display_lag_frames": [0, 3], "line_noise": {"corrupt_bytes": 0.002, "drop_lines": 0.02}})
    session_file(d, data, rig, retries=12, failure_streak=0)
    second = run_rig("run", str(session), "--retry-failed")
    assert second.returncode == 0, second.stderr
    return session


def _attempts(run: Path) -> list[dict[str, object]]:
    with sqlite3.connect(run / "run.sqlite") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM attempts ORDER BY attempt_id")]


def test_every_photographed_attempt_records_how_long_each_stage_took(shot: Path) -> None:
    rows = [r for r in _attempts(shot.parent / "run") if r["status"] in ("accepted", "rejected")]
    assert {r["status"] for r in rows} == {"accepted", "rejected"}
    for r in rows:
        timing = json.loads(str(r["timing"]))
        assert set(timing) >= STAGES, r
        assert all(0 <= v < 60 for v in timing.values()), r
    assert any(json.loads(str(r["timing"]))["write"] > 0 for r in rows)


def test_a_pause_is_recorded_with_its_reason_and_when_the_run_resumed(shot: Path) -> None:
    with sqlite3.connect(shot.parent / "run" / "run.sqlite") as db:
        pauses = db.execute("SELECT paused_at, resumed_at, reason FROM pauses").fetchall()
    assert len(pauses) == 1
    paused_at, resumed_at, reason = pauses[0]
    assert "2 consecutive items" in reason and "sharpness" in reason
    assert resumed_at is not None and resumed_at > paused_at


def test_rig_report_writes_one_page_into_the_run_folder_and_prints_its_path(shot: Path) -> None:
    result = run_rig("report", str(shot))
    assert result.returncode == 0, result.stderr
    page = shot.parent / "run" / "report.html"
    assert result.stdout.strip().splitlines()[-1] == str(page)
    html = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing from the network
    assert "<style>" in html and "<link" not in html
    rows = _attempts(shot.parent / "run")
    with sqlite3.connect(shot.parent / "run" / "run.sqlite") as db:
        studies = {r[0] for r in db.execute(
            "SELECT im.study_id FROM attempts a JOIN items it ON it.seq = a.seq "
            "JOIN images im ON im.image_no = it.image_no WHERE a.status = 'accepted'")}
        pause = db.execute("SELECT reason FROM pauses").fetchone()[0]
    assert all(s in html for s in studies)
    assert pause.split(";")[0] in html.replace("&#39;", "'")
    assert "image not found" in html and "wrong frame" in html
    for word in ("front-bright", "left-dim", "right_high-left_only", "retransmissions", "sharpness", "download"):
        assert word in html, word
    assert html.count('class="thumb accepted"') == sum(r["status"] == "accepted" for r in rows)


def test_retransmissions_are_recorded_by_reason_and_shown(shot: Path) -> None:
    with sqlite3.connect(shot.parent / "run" / "run.sqlite") as db:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    total, reasons = int(meta["retransmissions"]), json.loads(meta["retransmission_reasons"])
    assert total > 0 and sum(reasons.values()) == total, (total, reasons)
    assert set(reasons) <= {"no reply in time", "damaged reply", "command arrived damaged", "controller busy"}
    assert run_rig("report", str(shot)).returncode == 0
    html = (shot.parent / "run" / "report.html").read_text()
    for reason, n in reasons.items():
        assert re.search(rf"<td>{reason}</td><td class=\"num\">{n}</td>", html), reason


def test_rig_report_refuses_a_run_store_of_an_older_schema_in_one_line(tmp_path: Path, phantoms: Path) -> None:
    session = session_file(tmp_path, phantoms, rig_file(tmp_path))
    (tmp_path / "run").mkdir()
    with sqlite3.connect(tmp_path / "run" / "run.sqlite") as db:
        db.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema', '2')")
    result = run_rig("report", str(session))
    err = result.stderr.strip()
    assert result.returncode == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "schema 2" in err and not (tmp_path / "run" / "report.html").exists()


def test_a_run_started_by_the_previous_version_is_upgraded_and_resumes(tmp_path: Path, phantoms: Path) -> None:
    """Schema 3 (the previous release) lacks only the stage timings and the pauses table: a half-done run
    made by it must still be finished, exported and reported, not refused."""
    session = session_file(tmp_path, phantoms, rig_file(tmp_path))
    assert run_rig("run", str(session), "--fast").returncode == 0
    with sqlite3.connect(tmp_path / "run" / "run.sqlite") as db:  # as the previous version left it, half done
        db.execute("ALTER TABLE attempts DROP COLUMN timing")
        db.execute("DROP TABLE pauses")
        db.execute("UPDATE meta SET value = '3' WHERE key = 'schema'")
        db.execute("DELETE FROM attempts WHERE seq >= 12")
        db.execute("UPDATE items SET state = 'pending', attempts = 0 WHERE seq >= 12")
    db.close()
    resumed = run_rig("run", str(session), "--fast")
    assert resumed.returncode == 0, resumed.stderr
    assert "total 24/24 done" in resumed.stderr + resumed.stdout
    assert run_rig("report", str(session)).returncode == 0


# ---------------------------------------------------------------- the page in a real browser


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("href", "src") and v]
        self.ids |= {v for k, v in attrs if k == "id" and v}


class Chromium:
    """Debian's chromium driven over the DevTools protocol on a pipe (fds 3 and 4): nothing listens."""

    def __init__(self, width: int, height: int, profile: Path) -> None:
        to_chrome = os.pipe()
        from_chrome = os.pipe()
        keep = [os.dup(to_chrome[0]), os.dup(from_chrome[1])]  # not 3 or 4 by chance: dup2 needs them free

        def child() -> None:
            os.dup2(keep[0], 3)
            os.dup2(keep[1], 4)

        self.proc = subprocess.Popen(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             f"--window-size={width},{height}", f"--user-data-dir={profile}", "--no-first-run", "about:blank"],
            preexec_fn=child, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (*keep, to_chrome[0], from_chrome[1]):
            os.close(fd)
        self.out, self.inp = os.fdopen(to_chrome[1], "wb"), os.fdopen(from_chrome[0], "rb")
        self.n, self.buf = 0, b""

    def send(self, method: str, session: str | None = None, **params: object) -> dict[str, object]:
        self.n += 1
        msg: dict[str, object] = {"id": self.n, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        self.out.write(json.dumps(msg).encode() + b"\0")
        self.out.flush()
        while True:
            while b"\0" not in self.buf:
                chunk = os.read(self.inp.fileno(), 1 << 20)
                assert chunk, "chromium closed its DevTools pipe"
                self.buf += chunk
            raw, self.buf = self.buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.n:
                assert "error" not in reply, reply
                return reply["result"]

    def close(self) -> None:
        with contextlib.suppress(AssertionError, OSError):
            self.send("Browser.close")
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _evaluate(browser: Chromium, session: str, expression: str) -> object:
    result = browser.send("Runtime.evaluate", session, expression=expression, returnByValue=True)
    return result["result"].get("value")  # type: ignore[index,union-attr]


def test_the_report_renders_in_headless_chromium(shot: Path, tmp_path: Path) -> None:
    if shutil.which("chromium") is None:
        pytest.fail("chromium is not installed: run 'make tools' (Debian's chromium package)")
    assert run_rig("report", str(shot)).returncode == 0
    page = shot.parent / "run" / "report.html"
    parser = _Links()
    parser.feed(page.read_text())
    assert parser.refs
    for ref in parser.refs:  # every link and image resolves to a file of the run folder or a place on the page
        if ref.startswith("#"):
            assert ref[1:] in parser.ids, ref
            continue
        assert not urlparse(ref).scheme and not ref.startswith("/"), ref
        target = (page.parent / unquote(ref.split("#")[0])).resolve()
        assert target.is_file() and target.is_relative_to(page.parent.resolve()), ref

    browser = Chromium(1280, 2000, tmp_path / "profile")
    try:
        target = browser.send("Target.createTarget", url=page.as_uri())["targetId"]
        session = str(browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"])
        deadline = time.monotonic() + 60
        loaded = f"location.href === {json.dumps(page.as_uri())} && document.readyState === 'complete'"
        while not _evaluate(browser, session, loaded):  # the load event: every image has loaded or failed
            assert time.monotonic() < deadline, "the page did not finish loading"
        images = _evaluate(browser, session, """[...document.images].map(i => ({src: i.getAttribute('src'),
            cls: i.parentElement.parentElement.className, ok: i.complete && i.naturalWidth > 0}))""")
        plots = _evaluate(browser, session, """[...document.querySelectorAll('figure.plot')].map(f => ({id: f.id,
            svg: !!f.querySelector('svg'), w: f.getBoundingClientRect().width,
            h: f.getBoundingClientRect().height}))""")
        browser.send("Emulation.setDeviceMetricsOverride", session, width=1280, height=2000,
                     deviceScaleFactor=1, mobile=False)
        shot_png = browser.send("Page.captureScreenshot", session, format="png")["data"]
        full = browser.send("Page.getLayoutMetrics", session)["cssContentSize"]
        full_png = browser.send("Page.captureScreenshot", session, format="png", captureBeyondViewport=True,
                                clip={"x": 0, "y": 0, "width": full["width"], "height": full["height"],
                                      "scale": 0.5})["data"]
    finally:
        browser.close()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "report.png").write_bytes(base64.b64decode(str(shot_png), validate=True))
    (ARTIFACTS / "report-full.png").write_bytes(base64.b64decode(str(full_png), validate=True))

    accepted = sum(r["status"] == "accepted" for r in _attempts(shot.parent / "run"))
    assert images and all(i["ok"] for i in images), [i for i in images if not i["ok"]]
    assert sum("accepted" in i["cls"] for i in images) == accepted
    assert any("rejected" in i["cls"] for i in images)
    assert {p["id"] for p in plots} >= {"qa-plot", "rate-plot", "stages-plot"}
    assert all(p["svg"] and p["w"] > 300 and p["h"] > 150 for p in plots), plots
