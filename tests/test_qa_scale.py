"""QA at camera resolution: a 24 MP photo is checked decoded at a reduced scale that still shows the
x-ray at the screen's resolution, with the verdict and the homography of the full-resolution check.

The 24 MP photos are the demo studio's 1600x1200 photos enlarged 3.5 times (5600x4200) and saved as
camera JPEGs: rendering at 24 MP costs seconds a photo, and enlarging keeps every effect the studio
put in (moire, glare, blur, noise) where it was relative to the screen.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import rig_file

from rig.config import QAConfig, RigConfig, load_rig
from rig.fiducials import draw_fiducials, fiducial_layout
from rig.images import Prepared, prepare
from rig.qa import Expected, PhotoQA, Verdict, decode_photo, registered_crop
from rig.sim.studio import Scene, Studio

ENLARGE = 3.5  # 1600x1200 -> 5600x4200, 23.5 MP
FRAME = 684


@dataclass
class Setup:
    rig: RigConfig
    studio: Studio
    shown: Prepared
    expected: Expected


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, phantoms: Path) -> Setup:
    path = rig_file(tmp_path_factory.mktemp("rig"), display={"width": 1280, "height": 1024},
                    sim={"photo_width": 1600, "photo_height": 1200})
    rig = load_rig(path)
    w, h = rig.display.width, rig.display.height
    layout = fiducial_layout(w, h)
    shown = prepare(next((phantoms / "CheXpert-v1.0-small").rglob("*.jpg")), w, h, band=layout.band)
    x, y, xw, xh = shown.xray
    expected = Expected(FRAME, layout, shown.xray, shown.source_size, shown.canvas[y:y + xh, x:x + xw])
    return Setup(rig, Studio(rig), shown, expected)


def _pulses(s: Setup, pose: str) -> tuple[float, ...]:
    pulses = [1500.0] * len(s.rig.servos)
    for ch, us in s.rig.pose_targets(pose).items():
        pulses[ch] = float(us)
    return tuple(pulses)


def _photo(s: Setup, pose: str = "front", lighting: str = "bright", frame_id: int = FRAME,
           blur: float = 0.0, enlarge: float = ENLARGE) -> np.ndarray:
    """A 24 MP RGB photo of the frame (the 2 MP studio photo, optionally blurred, enlarged)."""
    levels = s.rig.light_levels(lighting)
    lights = tuple(levels.get(ch, 0) for ch in range(max(levels) + 1))
    frame = draw_fiducials(s.shown.canvas, frame_id, s.expected.layout)  # type: ignore[arg-type]
    small = s.studio.render(Scene(frame, _pulses(s, pose), lights))
    if blur:
        small = cv2.GaussianBlur(small, (0, 0), blur)
    return cv2.resize(small, (round(1600 * enlarge), round(1200 * enlarge)), interpolation=cv2.INTER_LINEAR)


def _jpeg(photo: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return data.tobytes()


def _xray_grid(expected: Expected) -> np.ndarray:
    x, y, w, h = expected.xray
    return np.array([[x + w * i / 4, y + h * j / 4] for i in range(5) for j in range(5)], np.float64)


def _screen_px_off(v: Verdict, photo_points: np.ndarray, expected: Expected) -> float:
    """Largest distance, in screen px, between the x-ray grid and where v's homography maps the photo
    points that truly show it."""
    assert v.homography is not None
    back = cv2.perspectiveTransform(photo_points[None], np.linalg.inv(v.homography))[0]
    return float(np.linalg.norm(back - _xray_grid(expected), axis=1).max())


def _truth(s: Setup, pose: str) -> np.ndarray:
    """Where the x-ray grid truly lands in the enlarged photo (the studio's ground truth, lens
    distortion included; cv2.resize puts source px i at ENLARGE * i + (ENLARGE - 1) / 2)."""
    points = s.studio.screen_points(_pulses(s, pose), _xray_grid(s.expected))
    return points * ENLARGE + (ENLARGE - 1) / 2


def _reduction(v: Verdict) -> int:
    """How many times smaller than the photo QA decoded it (1: whole, as QA did before it scaled)."""
    return getattr(v, "scale", 1)


def _full_resolution(data: bytes, expected: Expected) -> Verdict:
    photo = decode_photo(data)
    assert photo is not None
    return PhotoQA(QAConfig()).check(photo, expected)


@pytest.mark.parametrize("pose", ["front", "left"])
def test_a_24mp_jpeg_is_checked_at_reduced_scale_with_the_full_resolution_verdict(setup: Setup, pose: str) -> None:
    data = _jpeg(_photo(setup, pose))
    full = _full_resolution(data, setup.expected)
    qa = PhotoQA(QAConfig())
    cold, _ = qa.check_files([data], setup.expected)  # first photo: nothing predicts its scale yet
    warm, png = qa.check_files([data], setup.expected, register=True)
    assert full.homography is not None
    apart = _screen_px_off(warm, cv2.perspectiveTransform(_xray_grid(setup.expected)[None], full.homography)[0],
                           setup.expected)
    truth = _truth(setup, pose)
    fast_off, full_off = _screen_px_off(warm, truth, setup.expected), _screen_px_off(full, truth, setup.expected)
    print(f"\n{pose}: decoded at 1/{_reduction(warm)}; homography {apart:.3f} screen px from the full-resolution one; "
          f"off the truth by {fast_off:.3f} (full resolution: {full_off:.3f}); "
          f"sharpness {warm.sharpness:.3f} vs {full.sharpness:.3f}")
    assert full.ok and full.frame_id == FRAME
    assert _reduction(warm) >= 2  # not decoded whole
    for v in (cold, warm):
        assert (v.ok, v.frame_id, v.reasons, _reduction(v)) == (True, FRAME, [], _reduction(warm))
        assert v.margin_px == pytest.approx(full.margin_px, abs=1.0)  # in the full photo's px
        assert v.sharpness == pytest.approx(full.sharpness, abs=0.05)
    assert apart < 0.25
    assert fast_off <= full_off + 0.05  # (both keep the lens distortion no homography models)
    # The registered crop (the data set's pixel-aligned pair) matches the one cut from the whole photo.
    assert png is not None and full.homography is not None
    crop = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    photo = decode_photo(data)
    assert photo is not None
    whole = cv2.cvtColor(registered_crop(photo, full.homography, setup.expected), cv2.COLOR_RGB2GRAY)
    assert crop.shape == whole.shape == setup.expected.source_size[::-1]
    print(f"registered crop: mean |reduced - whole| {float(np.abs(crop - whole).mean()):.2f} grey levels")
    assert float(np.abs(crop - whole).mean()) < 2.0


def test_the_decode_scale_keeps_the_xray_at_screen_resolution_and_no_finer(setup: Setup) -> None:
    """The scale is the coarsest at which every part of the x-ray gets a decoded px per screen px (per
    source px for a registered crop of a source larger than the screen showed)."""
    data = _jpeg(_photo(setup, "left"))
    v, _ = PhotoQA(QAConfig()).check_files([data], setup.expected)
    assert v.homography is not None and _reduction(v) >= 2
    x, y, w, h = setup.expected.xray
    corners = np.array([[[x, y], [x + w, y], [x + w, y + h], [x, y + h]]], np.float64)
    step = np.array([[[1, 0]], [[0, 1]]], np.float64)

    def px_per_screen_px(scale: float) -> float:  # smallest local area scale over the corners
        out = []
        for c in corners[0]:
            p = cv2.perspectiveTransform(np.array([[c, c + step[0, 0], c + step[1, 0]]]), v.homography)[0] / scale
            a, b = p[1] - p[0], p[2] - p[0]
            out.append(abs(a[0] * b[1] - a[1] * b[0]) ** 0.5)
        return min(out)

    assert px_per_screen_px(v.scale) >= 1.0
    assert px_per_screen_px(v.scale * 2) < 1.0
    # A registered crop of a source larger than the screen showed is cut at one decoded px per source px.
    big = replace(setup.expected, source_size=(setup.expected.xray[2] * 2, setup.expected.xray[3] * 2))
    r, png = PhotoQA(QAConfig()).check_files([data], big, register=True)
    assert r.ok and png is not None
    assert px_per_screen_px(r.scale) >= 2.0 and r.scale < v.scale


@pytest.mark.parametrize("fault, reason", [("blurred", "sharpness"), ("wrong frame", "wrong frame"),
                                           ("flood", "exposure")])
def test_a_bad_24mp_photo_is_rejected_at_reduced_scale_for_its_reason(setup: Setup, fault: str,
                                                                       reason: str) -> None:
    photo = _photo(setup, "front", lighting="flood" if fault == "flood" else "bright",
                   frame_id=FRAME + 1 if fault == "wrong frame" else FRAME, blur=4.0 if fault == "blurred" else 0.0)
    data = _jpeg(photo)
    v, _ = PhotoQA(QAConfig()).check_files([data], setup.expected)
    full = _full_resolution(data, setup.expected)
    print(f"\n{fault}: {v.reasons} at 1/{_reduction(v)}; full resolution: {full.reasons}")
    assert _reduction(v) >= 2
    assert [r.split(":")[0] for r in v.reasons] == [reason]
    assert [r.split(":")[0] for r in full.reasons] == [reason]
    if fault == "wrong frame":
        assert v.frame_id == FRAME + 1


def test_the_first_decodable_file_of_a_capture_is_checked_at_reduced_scale(setup: Setup) -> None:
    """A RAW beside its JPEG, a PNG behind a damaged JPEG: the first file that decodes is checked, and a
    PNG is reduced as a JPEG is."""
    jpeg = _jpeg(_photo(setup, "front"))
    photo = _photo(setup, "front", enlarge=2.5)  # 12 MP: enough for a reduced scale, cheaper to encode
    ok, png = cv2.imencode(".png", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    qa = PhotoQA(QAConfig())
    for files in ([RAW, jpeg], [b"", jpeg], [jpeg[: len(jpeg) // 2], png.tobytes()]):
        v, _ = qa.check_files(files, setup.expected)
        assert (v.ok, v.frame_id) == (True, FRAME), [f[:4] for f in files]
        assert _reduction(v) >= 2


RAW = b"II*\x00" + zlib.compress(b"not an image OpenCV reads") * 100  # a TIFF-looking RAW it cannot decode


@pytest.mark.parametrize("files", [[b""], [b"\xff\xd8\xff\xe0 garbage"], [RAW], [b"", b"\xff\xd8"]],
                         ids=["empty", "damaged JPEG", "RAW alone", "empty and damaged"])
def test_empty_or_damaged_files_get_the_one_reason_verdict_never_an_exception(setup: Setup,
                                                                              files: list[bytes]) -> None:
    v, png = PhotoQA(QAConfig()).check_files(files, setup.expected)
    assert v.reasons == ["no file from the camera decodes as an image"] and png is None



@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (5, 1)])
@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_a_photo_too_small_to_check_gets_a_verdict_never_an_exception(setup: Setup, shape: tuple[int, int],
                                                                      ext: str) -> None:
    ok, data = cv2.imencode(ext, np.full((*shape, 3), 128, np.uint8))
    assert ok
    for expected in (setup.expected, replace(setup.expected, layout=None, frame_id=None)):
        v, png = PhotoQA(QAConfig()).check_files([data.tobytes()], expected)
        assert not v.ok and png is None, v

def _predicted(v: Verdict) -> bool:
    """Whether QA found every marker where the instance's last photo had it (False before it could)."""
    return bool(getattr(v, "predicted", False))


def _screen_px_apart(a: Verdict, b: Verdict, expected: Expected) -> float:
    assert b.homography is not None
    return _screen_px_off(a, cv2.perspectiveTransform(_xray_grid(expected)[None], b.homography)[0], expected)


def test_a_photo_at_the_last_pose_is_searched_where_its_markers_were_and_judged_as_by_a_fresh_instance(
        setup: Setup) -> None:
    """2 MP photos (the studio's own size): the second photo at a pose is searched only around the
    markers' predicted places, with the verdict and homography of a full search; a photo of another
    frame there is still read as that frame, and after a pose change that moves the markers out of
    their predicted places the whole photo is searched (a small one still finds them there)."""
    photo = _photo(setup, "front", enlarge=1.0)
    front, left = _jpeg(photo), _jpeg(_photo(setup, "left", enlarge=1.0))
    wrong = _jpeg(_photo(setup, "front", frame_id=FRAME + 1, enlarge=1.0))
    # The screen 150 px (1.4 marker sides) further left and 40 px higher.
    moved = _jpeg(cv2.warpAffine(photo, np.array([[1, 0, -150], [0, 1, -40]], np.float64), photo.shape[1::-1]))
    qa = PhotoQA(QAConfig())
    first, _ = qa.check_files([front], setup.expected)
    for data, pose_changed in ((front, False), (wrong, False), (left, False), (moved, True), (moved, False)):
        v, _ = qa.check_files([data], setup.expected)
        fresh, _ = PhotoQA(QAConfig()).check_files([data], setup.expected)
        apart = _screen_px_apart(v, fresh, setup.expected)
        print(f"\npredicted {_predicted(v)}: {v.reasons}, {apart:.4f} screen px from a fresh instance's homography")
        assert _predicted(v) is not pose_changed
        assert not _predicted(fresh)
        assert (v.ok, v.frame_id, v.reasons, v.markers) == (fresh.ok, fresh.frame_id, fresh.reasons, fresh.markers)
        assert v.frame_id == (FRAME + 1 if data is wrong else FRAME)
        assert apart < 0.05
        assert v.margin_px == pytest.approx(fresh.margin_px, abs=0.2)
        assert v.sharpness == pytest.approx(fresh.sharpness, abs=0.01) if v.ok else v.sharpness is None
        assert v.clipped == pytest.approx(fresh.clipped, abs=0.001)
    assert first.ok and not _predicted(first)
