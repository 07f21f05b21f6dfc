"""`rig report`: one HTML page of a run that an operator looks at instead of reading tables.

The page is `report.html` in the run folder with its thumbnails in `report_files/` beside it and its
plots inline (SVG from matplotlib), so it opens from the file system in any browser, needs no server
and loads nothing from the network. Links to full photos are relative, so the run folder can be
copied or served as a whole. Everything on it comes from the run store.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import cv2
import matplotlib

matplotlib.use("Agg")  # no display: plots are rendered to SVG only
import matplotlib.pyplot as plt
from jinja2 import Environment, PackageLoader, Template
from markupsafe import Markup
from matplotlib.figure import Figure

from rig import __version__
from rig.calibration.file import calibration_path
from rig.files import atomic_write
from rig.session import Session
from rig.store import RunStore

REPORT_NAME = "report.html"
THUMBS = "report_files"
THUMB_WIDTH = 240
MAX_THUMBS = 300  # per condition and per reason: a run of 100,000 photos still makes a page a browser opens
STAGES = {"move": "move + confirm", "settle": "display settle", "trigger": "trigger", "download": "download",
          "qa": "QA", "write": "write"}
STAGE_COLOURS = ["#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974", "#64b5cd"]
_REASON_KIND = re.compile(r"(?:^|; )([a-z][a-z -]*):")  # "wrong frame: ...; sharpness: ..." -> kinds


@dataclass
class Attempt:
    """One attempt as the page shows it."""

    attempt_id: int
    status: str
    reason: str | None
    started_at: float
    finished_at: float | None
    photo: str | None
    study_id: str | None
    image_id: str | None
    condition: str | None
    rep: int | None
    qa: dict[str, object] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    thumb: str | None = None

    @property
    def href(self) -> str | None:
        return None if self.photo is None else quote(self.photo)

    @property
    def kinds(self) -> list[str]:
        """What went wrong, in short ("wrong frame", "sharpness", "image not found", ...)."""
        if self.status == "interrupted":
            return ["interrupted by a stop"]
        text = (self.reason or "").removeprefix("qa: ")
        return _REASON_KIND.findall(text) or [self.status]


def write_report(session: Session, store: RunStore) -> Path:
    """Write `report.html` (and its thumbnails) into the run folder; returns the page's path."""
    root = store.root
    attempts = _attempts(store)
    accepted = [a for a in attempts if a.status == "accepted"]
    not_accepted = [a for a in attempts if a.status in ("rejected", "failed", "lost", "interrupted")]
    conditions = [c.label for c in store.conditions().values()]

    sheets = []
    for label in conditions:
        shots = [a for a in accepted if a.condition == label]
        sheets.append({"label": label, "total": len(shots), "shots": _with_thumbs(root, shots[:MAX_THUMBS])})
    groups: dict[str, list[Attempt]] = {}
    for a in not_accepted:
        for kind in a.kinds:
            groups.setdefault(kind, []).append(a)
    rejects = [{"kind": kind, "total": len(shots), "shots": _with_thumbs(root, shots[:MAX_THUMBS])}
               for kind, shots in sorted(groups.items(), key=lambda kv: -len(kv[1]))]

    pauses = [{"at": _utc(p), "until": _utc(r) if r else "not resumed yet", "reason": why}
              for p, r, why in store.db.execute("SELECT paused_at, resumed_at, reason FROM pauses ORDER BY paused_at")]
    pause_spans = store.db.execute("SELECT paused_at, resumed_at FROM pauses ORDER BY paused_at").fetchall()
    c = store.counts()
    qa_cfg = session.config.qa
    page = _template().render(
        title=f"{session.path.name}: {root}",
        version=__version__,
        generated=_utc(dt.datetime.now(dt.UTC).timestamp()),
        summary=_summary(session, store, attempts),
        counts=c,
        conditions=_condition_rows(store, accepted, not_accepted),
        sheets=sheets,
        rejects=rejects,
        pauses=pauses,
        retransmissions=store.retransmissions(),
        retransmission_reasons=sorted(store.retransmission_reasons().items(), key=lambda kv: -kv[1]),
        stage_table=_stage_table(attempts),
        qa_plot=_svg("qa", _qa_figure(attempts, conditions, qa_cfg.min_sharpness, qa_cfg.max_clipped)),
        rate_plot=_svg("rate", _rate_figure(attempts, pause_spans)),
        stages_plot=_svg("stages", _stages_figure(attempts)),
        qa_config=qa_cfg,
        max_thumbs=MAX_THUMBS,
    )
    out = root / REPORT_NAME
    atomic_write(out, page)
    return out


# ---------------------------------------------------------------- reading the store


def _attempts(store: RunStore) -> list[Attempt]:
    rows = store.db.execute(
        """SELECT a.attempt_id, a.status, a.reason, a.started_at, a.finished_at, a.photo, im.study_id, im.image_id,
                  c.label, it.rep, a.qa, a.timing
           FROM attempts a LEFT JOIN items it ON it.seq = a.seq LEFT JOIN images im ON im.image_no = it.image_no
           LEFT JOIN conditions c ON c.condition_no = it.condition_no
           WHERE a.status != 'writing' ORDER BY a.attempt_id""")
    return [Attempt(attempt_id, status, reason, started_at, finished_at, photo, study_id, image_id, condition, rep,
                    qa=json.loads(qa) if qa else {}, timing=json.loads(timing) if timing else {})
            for (attempt_id, status, reason, started_at, finished_at, photo, study_id, image_id, condition, rep,
                 qa, timing) in rows]


def _summary(session: Session, store: RunStore, attempts: list[Attempt]) -> list[tuple[str, str]]:
    images = int(store.meta("manifest_rows") or 0)
    n_cond = len(store.conditions())
    repeats = int(store.meta("repeats") or 1)
    cal = calibration_path(session.rig_path)
    if cal.is_file():
        calibration = f"{cal} (modified {_utc(cal.stat().st_mtime)})"
    else:
        calibration = "none: poses are in servo pulses"
    started = float(store.meta("created") or 0) or None
    last = max((a.finished_at or a.started_at for a in attempts), default=None)
    return [
        ("plan", f"{images} images x {n_cond} conditions x {repeats} repeats = {images * n_cond * repeats} captures"),
        ("session", str(session.path)),
        ("manifest", store.meta("manifest_source") or "-"),
        ("rig", f"{session.rig.name} ({session.rig_path})"),
        ("calibration", calibration),
        ("run folder", str(store.root)),
        ("started", _utc(started) if started else "-"),
        ("last attempt", _utc(last) if last else "-"),
        ("attempts", f"{len(attempts)} ({sum(a.status == 'rejected' for a in attempts)} rejected by QA or the "
                     f"controller check, {sum(a.status in ('failed', 'lost') for a in attempts)} failed, "
                     f"{sum(a.status == 'interrupted' for a in attempts)} interrupted)"),
    ]


def _condition_rows(store: RunStore, accepted: list[Attempt], others: list[Attempt]) -> list[dict[str, object]]:
    rows = []
    for cond in store.conditions().values():
        rows.append({"label": cond.label, "pose": cond.pose, "lighting": cond.lighting,
                     "accepted": sum(a.condition == cond.label for a in accepted),
                     "not_accepted": sum(a.condition == cond.label for a in others)})
    return rows


def _stage_table(attempts: list[Attempt]) -> list[dict[str, object]]:
    rows = []
    for key, name in STAGES.items():
        values = [a.timing[key] for a in attempts if key in a.timing]
        if values:
            rows.append({"stage": name, "n": len(values), "median": statistics.median(values),
                         "mean": statistics.fmean(values), "max": max(values)})
    return rows


# ---------------------------------------------------------------- thumbnails


def _with_thumbs(root: Path, shots: list[Attempt]) -> list[Attempt]:
    """Make each photo's thumbnail once (kept in report_files/ for the next report)."""
    for a in shots:
        if a.photo is None:
            continue
        rel = f"{THUMBS}/a{a.attempt_id}.jpg"
        if not (root / rel).is_file() and not _make_thumb(root / a.photo, root / rel):
            continue
        a.thumb = rel
    return shots


def _make_thumb(photo: Path, out: Path) -> bool:
    img = cv2.imread(str(photo), cv2.IMREAD_REDUCED_COLOR_2)
    if img is None:  # gone, or a RAW file OpenCV does not read: the card shows the reason without a picture
        return False
    h, w = img.shape[:2]
    img = cv2.resize(img, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))), interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    if not ok:
        return False
    out.parent.mkdir(exist_ok=True)
    atomic_write(out, jpeg.tobytes())
    return True


# ---------------------------------------------------------------- plots


def _svg(name: str, fig: Figure) -> Markup:
    """The figure as inline SVG; ids salted by name so several SVGs on one page never share an id."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": name, "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return Markup(text[text.index("<svg"):])


def _qa_figure(attempts: list[Attempt], conditions: list[str], min_sharpness: float,
               max_clipped: float) -> Figure:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    measures = [("sharpness", "sharpness (share of source detail)", min_sharpness),
                ("margin_px", "margin (px from the photo's edge)", None),
                ("clipped", "clipped (share of the x-ray area)", max_clipped)]
    for ax, (key, title, limit) in zip(axes, measures):
        by_condition = {label: [float(str(a.qa[key])) for a in attempts  # JSON numbers
                                if a.condition == label and a.qa.get(key) is not None] for label in conditions}
        everything = [v for values in by_condition.values() for v in values] + ([limit] if limit is not None else [])
        lo, hi = min(everything, default=0.0), max(everything, default=1.0)
        span = (lo, hi) if hi > lo else (lo, lo + 1.0)  # one range for every condition: bars line up
        for label, values in by_condition.items():
            if values:
                ax.hist(values, bins=20, range=span, histtype="step", linewidth=1.6, label=label)
        if limit is not None:
            ax.axvline(limit, color="black", linestyle="--", linewidth=1, label="QA limit")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("photos")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    return fig


def _rate_figure(attempts: list[Attempt], pauses: list[tuple[float, float | None]]) -> Figure:
    fig, ax = plt.subplots(figsize=(12, 3.2))
    times = [(a.finished_at or a.started_at, a.status == "accepted") for a in attempts]
    if times:
        t0 = min(a.started_at for a in attempts)
        span = max(t for t, _ in times) - t0
        width = max(span / 60, 1.0)  # seconds per bar: about 60 bars whatever the length of the run
        n = int(span // width) + 1
        good, bad = [0] * n, [0] * n
        for t, ok in times:
            (good if ok else bad)[min(n - 1, int((t - t0) // width))] += 1
        x = [(i + 0.5) * width / 60 for i in range(n)]
        scale = 60 / width  # per bin -> per minute
        ax.bar(x, [g * scale for g in good], width=width / 60 * 0.9, color="#55a868", label="accepted")
        ax.bar(x, [b * scale for b in bad], bottom=[g * scale for g in good], width=width / 60 * 0.9,
               color="#c44e52", label="rejected or failed")
        end = t0 + span
        for i, (p, r) in enumerate(pauses, 1):
            ax.axvspan((p - t0) / 60, ((r or end) - t0) / 60, color="#999999", alpha=0.25,
                       label="paused" if i == 1 else None)
            ax.annotate(f"pause {i}", ((p - t0) / 60, 0), xytext=(2, 2), textcoords="offset points", fontsize=8)
        ax.legend(frameon=False, fontsize=9, ncol=3, loc="lower left", bbox_to_anchor=(0, 1.0))
    ax.set_xlabel("minutes since the run started")
    ax.set_ylabel("attempts per minute")
    fig.tight_layout()
    return fig


def _stages_figure(attempts: list[Attempt], max_bars: int = 300) -> Figure:
    fig, ax = plt.subplots(figsize=(12, 3.4))
    timed = [a for a in attempts if a.timing]
    per = max(1, -(-len(timed) // max_bars))  # attempts per bar: a long run is averaged, not overdrawn
    groups = [timed[i:i + per] for i in range(0, len(timed), per)]
    bottom = [0.0] * len(groups)
    for (key, name), colour in zip(STAGES.items(), STAGE_COLOURS):
        heights = [statistics.fmean(a.timing.get(key, 0.0) for a in g) for g in groups]
        ax.bar(range(len(groups)), heights, bottom=bottom, width=1.0, color=colour, label=name)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_xlabel("photographed attempt, in order" + (f" (mean of {per} per bar)" if per > 1 else ""))
    ax.set_ylabel("seconds")
    ax.legend(frameon=False, fontsize=9, ncol=6, loc="upper left")
    ax.set_ylim(0, max(bottom, default=1) * 1.3 or 1)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- page


def _template() -> Template:
    env = Environment(loader=PackageLoader("rig", "templates"), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2")


def _utc(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
