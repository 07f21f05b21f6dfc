"""`rig synth`: reproducible whatever the workers, exactly-once resume after kill -9, operator mistakes."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, RIG_BIN, SYNTH_REFERENCE, png_claiming, rig_file, run_rig

PHOTOGRAPHIC = ("glare_matte", "moire", "tilt")


def synth(data: Path, out: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run_rig("synth", "--csv", str(data / "train.csv"), "--image-root", str(data), "--out", str(out),
                   *extra, timeout=timeout)


def descendants(pid: int) -> set[int]:
    """Every live process under `pid` (children, grandchildren, ...), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def wait_gone(pids: set[int], deadline_s: float) -> set[int]:
    """The pids still alive after waiting up to deadline_s for them to exit."""
    end = time.monotonic() + deadline_s
    alive = set(pids)
    while alive and time.monotonic() < end:
        alive = {p for p in alive if Path(f"/proc/{p}").exists() and "Z" not in _state(p)}
        time.sleep(0.05)
    return alive


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def digests(out: Path) -> dict[str, str]:
    """sha256 of every output image and CSV (the journal's line order depends on scheduling: left out)."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.suffix in {".jpg", ".csv"}}


def manifest_ids(data: Path) -> list[str]:
    with open(data / "train.csv", newline="") as f:
        return [row["Path"].split("/", 2)[2] for row in csv.DictReader(f)]  # drop CheXpert-v1.0-small/train


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


# ------------------------------------------------------------------ reproducibility


def test_each_perturbation_depends_only_on_seed_image_chain_and_level() -> None:
    from rig.synth.base import registry
    from rig.synth.job import Spec, perturb

    img = np.tile(np.linspace(0, 255, 96, dtype=np.float32), (120, 1)).astype(np.uint8)
    for name in registry():
        if name == "studio":
            continue
        spec = Spec((name,), 3, 7, "/unused")
        a, pa = perturb(spec, "patient1/study1/view1_frontal.jpg", img.copy())
        b, pb = perturb(spec, "patient1/study1/view1_frontal.jpg", img.copy())
        assert pa == pb and np.array_equal(a, b), name
        if pa and name not in {"blur", "motion"}:  # these draw nothing
            others = [perturb(spec, f"patient{i}/study1/view1_frontal.jpg", img)[1] for i in range(2, 6)]
            assert any(o != pa for o in others), f"{name} draws the same parameters for every image"


def test_outputs_are_byte_identical_with_one_and_several_workers(phantoms: Path, tmp_path: Path,
                                                                 synth_one_worker: Path) -> None:
    one, three = synth_one_worker, tmp_path / "three"
    r3 = synth(phantoms, three, *SYNTH_REFERENCE, "--workers", "3")
    assert r3.returncode == 0, r3.stderr
    d1, d3 = digests(one), digests(three)
    images = [k for k in d1 if k.endswith(".jpg")]
    assert len(images) == 8 and all(k.startswith("glare_matte/moire/tilt/level_3/train/patient") for k in images)
    assert d1 == d3
    assert len({d1[k] for k in images}) == 8, "two images came out the same"


def test_csv_keeps_labels_rewrites_path_and_adds_drawn_parameters(phantoms: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = synth(phantoms, out, "--set", "photographic", "--level", "2", "--workers", "2")
    assert r.returncode == 0, r.stderr
    rows = read_csv(out / "glare_matte/moire/tilt/level_2/train.csv")
    source = read_csv(phantoms / "train.csv")
    assert len(rows) == len(source)
    for got, src in zip(rows, source):
        assert got["Path"] == "glare_matte/moire/tilt/level_2/train/" + src["Path"].split("/", 2)[2]
        assert (out / got["Path"]).is_file()
        assert all(got[k] == v for k, v in src.items() if k != "Path")
        assert (got["Perturbation"], got["Level"], got["Seed"]) == ("glare_matte,moire,tilt", "2", "0")
        for col in ("glare_matte_x", "glare_matte_y", "moire_period_px", "tilt_yaw_deg", "tilt_pitch_deg"):
            float(got[col])
    assert len({r["tilt_yaw_deg"] for r in rows}) == len(rows)


# ------------------------------------------------------------------ resume


def test_kill_9_mid_run_then_rerun_finishes_exactly_once(tmp_path: Path) -> None:
    from rig.demo_data import make_demo_data

    data = tmp_path / "data"
    make_demo_data(data, count=16, seed=3)
    ids = manifest_ids(data)
    out, clean = tmp_path / "out", tmp_path / "clean"
    args = ["synth", "--csv", str(data / "train.csv"), "--image-root", str(data), "--out", str(out),
            "--chain", "film,moire,glare_glossy", "--level", "4", "--workers", "1"]
    proc = subprocess.Popen([*RIG_BIN, *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / "synth-journal.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:  # wait for a few finished images, then kill
        if journal.exists() and journal.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    helpers = descendants(proc.pid)  # the worker pool
    assert helpers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not wait_gone(helpers, 30), "workers of the killed run are still alive"
    done_before = journal.read_bytes().count(b"\n")
    assert 3 <= done_before < len(ids)
    for p in out.rglob("*.jpg"):  # whatever the kill left in place is a whole JPEG
        assert p.read_bytes().endswith(b"\xff\xd9"), f"{p} is a partial file"

    rerun = run_rig(*args, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    said = re.search(r"resuming .*: (\d+) of (\d+) image\(s\) already done", rerun.stderr)
    assert said, rerun.stderr
    already = int(said.group(1))
    assert already >= done_before and already < len(ids)
    images = sorted(p for p in out.rglob("*") if p.is_file() and p.suffix == ".jpg")
    assert len(images) == len(ids)  # no duplicates
    assert not any(p.name.endswith(".tmp") for p in out.rglob("*")) and not (out / ".synth-tmp").exists()
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert sorted(entry["id"] for entry in lines if entry["ok"]) == sorted(ids)  # each image journalled exactly once
    rows = read_csv(out / "film/moire/glare_glossy/level_4/train.csv")
    assert len(rows) == len({r["Path"] for r in rows}) == len(ids)

    r = run_rig(*[a if a != str(out) else str(clean) for a in args], timeout=300)
    assert r.returncode == 0, r.stderr
    assert digests(out) == digests(clean)  # no partial file, nothing different from an uninterrupted run


def test_journal_drops_a_half_line_left_by_a_kill(tmp_path: Path) -> None:
    from rig.synth.journal import JOURNAL_FILE, Journal

    j = Journal(tmp_path)
    j.record("p1/s1/a.jpg", True, {"x": 1.0}, "")
    j.record("p1/s1/b.jpg", False, None, "cannot decode")
    j.close()
    with open(tmp_path / JOURNAL_FILE, "a") as f:
        f.write('{"id":"p1/s1/c.jpg","ok":tr')  # the kill came mid-line
    j = Journal(tmp_path)
    assert set(j.done) == {"p1/s1/a.jpg"} and set(j.failed) == {"p1/s1/b.jpg"}
    j.record("p1/s1/c.jpg", True, {"x": 3.0}, "")
    j.record("p1/s1/b.jpg", True, {"x": 2.0}, "")  # retried on this start, and fine now
    j.close()
    j = Journal(tmp_path)
    assert j.done == {"p1/s1/a.jpg": {"x": 1.0}, "p1/s1/b.jpg": {"x": 2.0}, "p1/s1/c.jpg": {"x": 3.0}}
    assert not j.failed
    j.close()


def test_changed_command_into_same_output_is_refused_with_what_changed(phantoms: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert synth(phantoms, out, "--set", "digital", "--level", "1").returncode == 0
    before = digests(out), (out / "synth-journal.jsonl").read_bytes()
    line = one_error_line(synth(phantoms, out, "--set", "digital", "--level", "2", "--seed", "3"))
    assert "level 1 -> 2" in line and "seed 0 -> 3" in line and str(out) in line
    line = one_error_line(synth(phantoms, out, "--chain", "blur"))
    assert "chain random-digital -> blur" in line
    assert (digests(out), (out / "synth-journal.jsonl").read_bytes()) == before


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("content, says", [
    (b"\xff\xd8 this is not a jpeg", "cannot be decoded"),
    (b"", "an empty file"),
    (png_claiming(60000, 60000), "60000x60000"),  # cv2.error in the worker, a traceback in the parent before
], ids=["not-a-jpeg", "empty", "bomb"])
def test_corrupt_image_fails_alone_and_is_listed(phantoms: Path, tmp_path: Path, content: bytes, says: str) -> None:
    data = tmp_path / "data"
    shutil.copytree(phantoms, data)
    ids = manifest_ids(data)
    bad = ids[2]
    (data / "CheXpert-v1.0-small/train" / bad).write_bytes(content)
    out = tmp_path / "out"
    r = synth(data, out, "--set", "digital", "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert "1 image(s) failed" in r.stderr and f"{bad}: image cannot be decoded" in r.stderr and says in r.stderr
    rows = read_csv(out / "random-digital/level_1/train.csv")
    assert [row["Path"].split("/", 3)[3] for row in rows] == [i for i in ids if i != bad]


@pytest.mark.parametrize("extra, says", [
    (("--chain", "glare_matte,wobble"), "unknown perturbation 'wobble'"),
    (("--set", "digital", "--level", "5"), "--level: '5' is not a level"),
    (("--set", "digital", "--level", "two"), "--level: 'two' is not a level"),
    (("--chain", "studio"), "--rig"),
    (("--set", "digital", "--chain", "blur"), "exactly one of --set"),
])
def test_operator_mistakes_are_one_line_and_exit_2(phantoms: Path, tmp_path: Path, extra: tuple[str, ...],
                                                   says: str) -> None:
    out = tmp_path / "out"
    assert says in one_error_line(synth(phantoms, out, *extra))
    assert not (out / "synth.json").exists()


def test_output_inside_the_input_tree_is_refused(phantoms: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(phantoms, data)
    line = one_error_line(synth(data, data / "CheXpert-v1.0-small" / "synth", "--set", "digital"))
    assert "inside the input tree" in line
    assert not (data / "CheXpert-v1.0-small" / "synth").exists()


def test_output_that_cannot_be_created_is_one_line(phantoms: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert "cannot create" in one_error_line(synth(phantoms, blocker / "out", "--set", "digital"))


def test_list_names_every_perturbation_with_its_levels() -> None:
    r = run_rig("synth", "--list")
    assert r.returncode == 0, r.stderr
    for name in ("moire", "blur", "motion", "glare_matte", "glare_glossy", "tilt", "brightness_up",
                 "brightness_down", "contrast_up", "contrast_down", "identity", "random-digital", "rotation",
                 "translation", "exposure", "film", "studio"):
        assert name in r.stdout
    assert "level 4" in r.stdout and "photographic" in r.stdout
    from rig.synth import PUBLISHED_SETS
    from rig.synth.base import SETS

    assert tuple(SETS) == PUBLISHED_SETS  # --set's choices are the sets the registry knows


# ------------------------------------------------------------------ beyond CheXphoto


def test_studio_photographs_through_the_virtual_studio_within_the_rig_poses(phantoms: Path, tmp_path: Path) -> None:
    import cv2

    rig = rig_file(tmp_path)
    out = tmp_path / "out"
    r = synth(phantoms, out, "--chain", "studio", "--level", "2", "--rig", str(rig), "--workers", "2")
    assert r.returncode == 0, r.stderr
    rows = read_csv(out / "studio/level_2/train.csv")
    assert len(rows) == 8
    photo = cv2.imread(str(out / rows[0]["Path"]))
    assert photo.shape == (450, 600, 3)  # the rig's camera, not the x-ray's size
    pans = [float(r["studio_pan_deg"]) for r in rows]
    assert len(set(pans)) == 8 and all(abs(p) < 25 for p in pans)
    assert all(r["studio_light_left"] != "" for r in rows)
