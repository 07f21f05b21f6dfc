"""Photo QA: before a photo is accepted it must show the frame it was taken for, the whole screen,
sharp and not blown out.

With fiducials the checks are: the frame id spelled by the digit markers equals the attempt's (else
the camera fired on another frame); all four corner markers are found and the screen's corners lie
inside the photo with a margin; the x-ray area, registered through the homography fitted to the
markers' corners, keeps enough of the fine detail the display drew (Laplacian energy of the photo
against the drawn frame, docs/decisions/0003) and has few clipped pixels. Without
fiducials nothing locates the screen in the photo: only sharpness and clipping over the middle of
the photo are checked.

A camera's photo has far more pixels than the screen it shows, so `check_files` decodes a JPEG at
the coarsest DCT scale (1/2, 1/4, 1/8) that still gives the x-ray area at least one decoded pixel
per screen pixel, finds and refines the markers at that scale, and measures sharpness and clipping
there: at the source's resolution, not the camera's (docs/decisions/0014). Homography and margin
are still reported in the full photo's pixels.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import imagesize
import numpy as np

from rig.config import QAConfig
from rig.fiducials import CORNER_IDS, DIGITS, MARKER_DICT, FiducialLayout, digits_frame_id, frame_id_digits

_CLIP_LEVEL = 250
SHARPNESS_SIZE = 192  # sharpness compares photo and source at this many px across the x-ray's long side


@dataclass(frozen=True)
class Expected:
    """What the photo of one attempt should show."""

    frame_id: int | None  # None: fiducials off
    layout: FiducialLayout | None
    xray: tuple[int, int, int, int]  # x, y, w, h on the screen
    source_size: tuple[int, int]
    reference: np.ndarray | None = None  # the x-ray area as the display drew it (RGB, screen pixels)


@dataclass
class Verdict:
    reasons: list[str] = field(default_factory=list)
    frame_id: int | None = None  # decoded
    margin_px: float | None = None  # smallest distance of a screen corner to the photo's edge
    sharpness: float | None = None
    clipped: float | None = None
    markers: int = 0
    homography: np.ndarray | None = None  # continuous screen px -> photo px (the full photo's)
    registered: np.ndarray | None = None  # RGB, source-sized, when asked for
    scale: int = 1  # the photo was checked decoded at 1/scale of its size
    predicted: bool = False  # every marker was found where the instance's last photo put it (no full search)
    timings: dict[str, float] = field(default_factory=dict)  # seconds by step: decode, detection, ...

    @property
    def ok(self) -> bool:
        return not self.reasons

    def record(self) -> dict[str, object]:
        """What the attempt row keeps (JSON)."""
        def r(x: float | None, n: int = 3) -> float | None:
            return None if x is None else round(float(x), n)
        return {"reasons": self.reasons, "frame_id": self.frame_id, "margin_px": r(self.margin_px, 1),
                "sharpness": r(self.sharpness, 3), "clipped": r(self.clipped, 5), "markers": self.markers,
                "scale": self.scale,
                "homography": None if self.homography is None else np.round(self.homography, 9).tolist()}


SCALES = (8, 4, 2, 1)  # libjpeg's DCT scalings that OpenCV offers, coarsest first
_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}
MIN_MAGNIFICATION = 1.0  # decoded photo px per screen px over every part of the x-ray area (by area)


def decode_photo(data: bytes, scale: int = 1) -> np.ndarray | None:
    """RGB array of an encoded photo at 1/scale of its size, or None when it is not an image OpenCV
    reads (e.g. RAW, an empty or damaged file).

    A JPEG is reduced while it decodes (libjpeg's scaled IDCT: a fraction of the full decode's time);
    other formats are decoded whole and then averaged down, so both come out alike."""
    buf = np.frombuffer(data, np.uint8)
    if buf.size == 0:
        return None
    try:
        img = cv2.imdecode(buf, _REDUCED[scale] if is_jpeg(data) else cv2.IMREAD_COLOR)
    except cv2.error:
        return None
    if img is None:
        return None
    if scale > 1 and not is_jpeg(data):
        h, w = img.shape[:2]
        img = cv2.resize(img, (_reduced(w, scale), _reduced(h, scale)), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _reduced(length: int, scale: int) -> int:
    """A side of `length` px decoded at 1/scale (rounded up, as libjpeg and decode_photo do)."""
    return -(-length // scale)


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def photo_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the file's header alone (as the decoder orients it), or None."""
    w, h = imagesize.get(io.BytesIO(data))
    return (w, h) if w > 0 and h > 0 else None


def coarsest_scale(magnification: float, need: float = MIN_MAGNIFICATION) -> int:
    """The coarsest decode scale at which `magnification` (full photo px per screen px) still gives
    `need` decoded px per screen px."""
    return next((s for s in SCALES if magnification / s >= need), 1)


def needed_magnification(expected: Expected, register: bool) -> float:
    """Decoded px per screen px the checks need over the x-ray: one (the screen's resolution); with a
    registered crop of a source that has more pixels than the screen showed, one per source px, so that
    the crop is never enlarged from the decoded photo."""
    if not register:
        return MIN_MAGNIFICATION
    _, _, w, h = expected.xray
    sw, sh = expected.source_size
    return max(MIN_MAGNIFICATION, sw / w, sh / h)


def to_decoded(scale: int) -> np.ndarray:
    """Full photo px -> px of the photo decoded at 1/scale (decoded px i averages full px
    [s*i, s*i + s), so its centre is at s*i + (s - 1) / 2)."""
    o = (scale - 1) / 2
    return np.array([[1 / scale, 0, -o / scale], [0, 1 / scale, -o / scale], [0, 0, 1]], np.float64)


MIN_SCREEN_SPAN = 0.2  # the screen spans at least this share of the photo's long side (else: the slow search)
DETECT_SIZE = 1200  # without a predicted marker size, photos this long or longer are searched at half size
MIN_MARKER_PX = 40  # markers are searched in the photo reduced (by a power of 2) to about this side, no less
CROP_MARGIN = 0.5  # with a predicted pose, each marker is searched this many marker sides around its place
CROP_PERIMETER_RATE = 1.0  # ... and a marker's perimeter is at least this times the crop's long side


def _detector(min_perimeter_rate: float | None) -> cv2.aruco.ArucoDetector:
    params = cv2.aruco.DetectorParameters()
    params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    # The display draws the markers white on black: the image is inverted before the search instead of
    # letting the detector try both polarities (that doubles its slowest step, reading each candidate's
    # bits against the 1000 codes).
    params.detectInvertedMarker = False
    params.perspectiveRemovePixelPerCell = 8  # read bits from a finer resampling: small markers decode
    params.perspectiveRemoveIgnoredMarginPerCell = 0.25  # read each cell's middle: blur smears its edges
    if min_perimeter_rate is not None:  # marker perimeter / the image's long side
        params.minMarkerPerimeterRate = min_perimeter_rate
    return cv2.aruco.ArucoDetector(cv2.aruco.getPredefinedDictionary(MARKER_DICT), params)


class PhotoQA:
    """Checks photos against an attempt's expectations; one instance per thread (its OpenCV detectors,
    and the last photo's screen size in the photo, which predicts the next photo's decode scale)."""

    def __init__(self, config: QAConfig) -> None:
        self.config = config
        self.detector = _detector(None)
        self._sized: dict[float, cv2.aruco.ArucoDetector] = {}  # by minimum marker perimeter rate
        self._span: float | None = None  # last x-ray's magnification / its photo's long side
        self._crop_detector = _detector(CROP_PERIMETER_RATE)
        # The last photo whose every marker was found: its layout, size and homography (full photo px)
        # predict where the next photo's markers are (the rig holds a pose for many photos).
        self._last: tuple[FiducialLayout, tuple[int, int], np.ndarray] | None = None

    def _detect(self, gray: np.ndarray, layout: FiducialLayout | None = None,
                marker_px: float | None = None) -> tuple[list[np.ndarray], np.ndarray | None]:
        """ArUco markers (drawn white on black), with corners refined at `gray`'s own size.

        Large photos are searched reduced: by the largest power of 2 that keeps markers of the predicted
        `marker_px` (side in `gray`'s px) at MIN_MARKER_PX or more, or without a prediction at half size
        from DETECT_SIZE on. With the layout known, candidates far smaller than its markers can be are
        skipped (most of the detector's time goes to the contours it must read): a screen spanning a
        fifth of the photo's long side still shows its markers above that size. Should either shortcut
        miss a marker, the photo is searched again at half size without the bound."""
        plain = 2 if max(gray.shape) >= DETECT_SIZE else 1
        if layout is not None:
            rate = round(MIN_SCREEN_SPAN * 4 * layout.marker / layout.width, 3)
            fast = self._sized.get(rate) or self._sized.setdefault(rate, _detector(rate))
            f = plain
            if marker_px is not None:
                f = 1
                while marker_px / (2 * f) >= MIN_MARKER_PX and max(gray.shape) / (2 * f) >= 64:
                    f *= 2
            corners, ids = _detect_at(fast, gray, f)
            if ids is not None and len(ids) >= len(layout.slots()) and set(CORNER_IDS) <= set(ids.ravel()):
                return corners, ids
        return _detect_at(self.detector, gray, plain)

    def _detect_predicted(self, gray: np.ndarray, scale: int, layout: FiducialLayout, H: np.ndarray,
                          likely: Sequence[int]) -> dict[int, list[np.ndarray]] | None:
        """Markers (full photo px, by id) searched only in crops around each slot where homography `H`
        puts it, or None as soon as a crop does not hold exactly one marker of its kind (a corner slot
        its corner id, a digit slot a digit id, whichever: the digits are read, never assumed).

        Each crop is the slot's predicted box grown by CROP_MARGIN marker sides, aligned to the
        pyramid level the marker is searched at, so that its reductions are those of the whole photo.
        The detector compares a marker's bits with the dictionary's codes in order and stops at the
        first within its correction (2 bits; the codes are at least 5 apart, so at most one is): the
        `likely` ids are put first, which reads the same id from the same bits, only sooner."""
        order = _reading_order(likely)
        self._crop_detector.setDictionary(cv2.aruco.Dictionary(_DICTIONARY.bytesList[order], _DICTIONARY.markerSize,
                                                               _DICTIONARY.maxCorrectionBits))
        to_gray = to_decoded(scale) @ H
        gh, gw = gray.shape
        found: dict[int, list[np.ndarray]] = {}
        for kind, index, x, y in layout.slots():
            quad = cv2.perspectiveTransform(_marker_corners(x, y, layout.marker)[None].astype(np.float64), to_gray)[0]
            side = float(np.linalg.norm(quad - np.roll(quad, 1, axis=0), axis=1).min())
            f = 1
            while side / (2 * f) >= MIN_MARKER_PX:
                f *= 2
            grow = CROP_MARGIN * side
            x0, y0 = (int(v - grow) // f * f for v in quad.min(axis=0))
            x1, y1 = (-(-int(v + grow + 1) // f) * f for v in quad.max(axis=0))
            if x0 < 0 or y0 < 0 or x1 > gw or y1 > gh:
                return None
            corners, ids = _detect_at(self._crop_detector, gray[y0:y1, x0:x1], f)
            if ids is None or len(ids) != 1:
                return None
            marker_id = int(order[ids.ravel()[0]])
            if marker_id != CORNER_IDS[index] if kind == "corner" else marker_id in CORNER_IDS:
                return None
            c = corners[0].reshape(4, 2).astype(np.float64) + (x0, y0)
            found.setdefault(marker_id, []).append(c * scale + (scale - 1) / 2)  # decoded px -> full photo px
        return found

    def check_files(self, files: Sequence[bytes], expected: Expected,
                    register: bool = False) -> tuple[Verdict, bytes | None]:
        """QA of the first of a capture's files that decodes as an image (a RAW+JPEG pair: the JPEG);
        with `register`, the accepted photo's registered x-ray area as PNG.

        The photo is decoded at the scale its header and the last photo predict, checked, and decoded
        again at another scale only if its own homography says the x-ray area needs a finer one (or a
        coarser one would do: the verdict is always the coarsest sufficient scale's, whatever came
        before)."""
        for data in files:
            try:
                verdict = self._check_file(data, expected, register)
            except Exception as e:  # any bytes get a verdict: one odd photo must never stop the run
                detail = (str(e).strip().splitlines() or [type(e).__name__])[-1]
                verdict = Verdict(reasons=[f"photo cannot be checked: {detail}"])
            if verdict is not None:
                break
        else:
            return Verdict(reasons=["no file from the camera decodes as an image"]), None
        png = None
        if verdict.ok and verdict.registered is not None:
            ok, encoded = cv2.imencode(".png", cv2.cvtColor(verdict.registered, cv2.COLOR_RGB2BGR))
            png = encoded.tobytes() if ok else None
        return verdict, png

    def _check_file(self, data: bytes, expected: Expected, register: bool) -> Verdict | None:
        start = time.perf_counter()
        size = photo_size(data)
        predicted = None if size is None else self._predicted_magnification(size, expected)
        need = needed_magnification(expected, register)
        scale = 1 if predicted is None else coarsest_scale(predicted, need)
        timings: dict[str, float] = {}
        tried: dict[int, Verdict] = {}
        while True:
            photo = decode_photo(data, scale)
            if photo is None and not tried:
                return None
            if photo is None:  # (at a second scale only if memory ran out: keep what was found)
                verdict = tried[min(tried)]
                break
            if size is None or scale == 1:
                size = (photo.shape[1], photo.shape[0])
            elif _reduced(size[0], scale) != photo.shape[1] and _reduced(size[1], scale) == photo.shape[1]:
                size = (size[1], size[0])  # the decoder turned it upright (a PNG's EXIF orientation): so is its size
            timings["decode"] = timings.get("decode", 0.0) + time.perf_counter() - start
            verdict = tried[scale] = self._check(photo, scale, size, expected, register, timings, predicted,
                                                 predict=True)
            magnification = _xray_magnification(verdict.homography, expected)
            if magnification is None:  # no registration: nothing says what scale the x-ray needs
                self._span = None  # nor what the next photo's will be
                if expected.layout is not None and scale > 1 and 1 not in tried:
                    scale, predicted, start = 1, None, time.perf_counter()  # markers too small at this scale?
                    continue
                break
            self._span = magnification / max(size)
            wanted = coarsest_scale(magnification, need)
            if wanted == scale:
                break
            if wanted in tried:  # on the threshold: between the two, the finer one is sufficient
                verdict = tried[min(scale, wanted)]
                break
            scale, predicted, start = wanted, magnification, time.perf_counter()
        verdict.timings = timings
        return verdict

    def _predicted_magnification(self, size: tuple[int, int], expected: Expected) -> float:
        """Full photo px per screen px over the x-ray, before decoding: as in this instance's last photo,
        or as if the screen filled the photo (the coarsest plausible). Without fiducials only the
        photo's middle half is measured, and it is given the x-ray's own size."""
        if expected.layout is None:
            return max(size) / 2 / max(expected.xray[2:])
        if self._span is not None:
            return self._span * max(size)
        layout = expected.layout
        return min(max(size) / max(layout.width, layout.height), min(size) / min(layout.width, layout.height))

    def check(self, photo: np.ndarray, expected: Expected, register: bool = False) -> Verdict:
        """QA of a decoded photo at its full resolution."""
        timings: dict[str, float] = {}
        verdict = self._check(photo, 1, (photo.shape[1], photo.shape[0]), expected, register, timings)
        verdict.timings = timings
        return verdict

    def _check(self, photo: np.ndarray, scale: int, size: tuple[int, int], expected: Expected, register: bool,
               timings: dict[str, float], magnification: float | None = None, predict: bool = False) -> Verdict:
        """QA of `photo`, the photo decoded at 1/scale of its `size` (width, height), whose screen is
        expected at about `magnification` full photo px per screen px; with `predict`, its markers are
        first searched where this instance's last photo of that size had them. Reported geometry
        (homography, margin) is in the full photo's pixels."""
        verdict = Verdict(scale=scale)
        if expected.layout is None:
            self._quality(photo, None, expected, verdict, timings)
            return verdict
        layout = expected.layout
        start = time.perf_counter()
        gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
        located = None
        last = self._last if predict else None
        if last is not None and last[0] == layout and last[1] == size:
            # Markers searched only around where the last photo had them; kept only if every one is
            # found there (each id read from this photo), else the whole photo is searched.
            likely = [*CORNER_IDS, *([] if expected.frame_id is None else frame_id_digits(expected.frame_id))]
            found = self._detect_predicted(gray, scale, layout, last[2], likely)
            located = None if found is None else _locate(found, layout)
            verdict.predicted = located is not None and located.complete
        if located is None or not verdict.predicted:
            corners, ids = self._detect(gray, layout, None if magnification is None else
                                        layout.marker * magnification / scale)
            found = {}
            for c, i in zip(corners, [] if ids is None else ids.ravel()):
                # decoded px -> full photo px
                found.setdefault(int(i), []).append(c.reshape(4, 2).astype(np.float64) * scale + (scale - 1) / 2)
            located = _locate(found, layout)
        now = time.perf_counter()
        timings["detection"] = timings.get("detection", 0.0) + now - start
        start = now
        verdict.markers = located.markers
        H, sides = located.homography, located.sides
        if H is None:
            verdict.reasons.append(f"coverage: {located.corners}/4 screen corner markers found; part of the screen "
                                   "is out of frame or hidden")
            timings["registration"] = timings.get("registration", 0.0) + time.perf_counter() - start
            self._quality(photo, None, expected, verdict, timings)
            return verdict
        if predict and located.complete:
            self._last = (layout, size, H)
        verdict.homography = H
        decoded = {digits_frame_id([side[i] for i in range(DIGITS)]) for side in sides.values()
                   if len(side) == DIGITS}
        if len(decoded) == 1:
            verdict.frame_id = decoded.pop()
            if verdict.frame_id != expected.frame_id:
                verdict.reasons.append(f"wrong frame: the photo shows frame {verdict.frame_id}, "
                                       f"expected {expected.frame_id}")
        elif decoded:
            verdict.reasons.append(f"frame id: the two sides disagree ({sorted(decoded)})")
        else:
            verdict.reasons.append("frame id: no complete set of id markers found")
        w, h = layout.width, layout.height
        screen = cv2.perspectiveTransform(np.array([[[0, 0], [w, 0], [w, h], [0, h]]], np.float64), H)[0]
        pw, ph = size
        verdict.margin_px = float(min(screen[:, 0].min(), screen[:, 1].min(),
                                      pw - 1 - screen[:, 0].max(), ph - 1 - screen[:, 1].max()))
        need = self.config.min_margin * min(pw, ph)
        if verdict.margin_px < need:
            verdict.reasons.append(f"coverage: the screen comes within {verdict.margin_px:.0f} px of the photo's "
                                   f"edge (needs {need:.0f})")
        timings["registration"] = timings.get("registration", 0.0) + time.perf_counter() - start
        self._quality(photo, to_decoded(scale) @ H, expected, verdict, timings, register, gray)
        return verdict

    def _quality(self, photo: np.ndarray, H: np.ndarray | None, expected: Expected, verdict: Verdict,
                 timings: dict[str, float], register: bool = False, gray: np.ndarray | None = None) -> None:
        """Clipping over the x-ray area, and its sharpness against what the display drew.

        `H` maps screen px to `photo`'s px (`gray`: the photo in grey levels). Without it (fiducials off
        or corners missing) only clipping over the photo's middle is measured: sharpness needs the photo
        registered to the source.

        The x-ray area is resampled at screen-pixel spacing: in grey levels for sharpness (all it
        measures), and in colour (clipping is per channel) at every other of those points each way, a
        quarter of the pixels, whose clipped share is the whole area's within sampling noise.
        """
        start = time.perf_counter()
        if H is None:
            ph, pw = photo.shape[:2]
            area = photo[ph // 4:3 * ph // 4, pw // 4:3 * pw // 4]
        else:
            x, y, w, h = expected.xray
            # Area px (i, j) shows screen px (x + i, y + j): aligned with what the display drew.
            to_photo = H @ np.array([[1, 0, x + 0.5], [0, 1, y + 0.5], [0, 0, 1]], np.float64)
            flags, border = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, cv2.BORDER_REPLICATE
            area = cv2.warpPerspective(photo, to_photo @ np.diag([2.0, 2.0, 1.0]), ((w + 1) // 2, (h + 1) // 2),
                                       flags=flags, borderMode=border)
            sharp = expected.reference is not None and verdict.frame_id == expected.frame_id
            # (compared with another frame's image the measure means nothing)
            if sharp:
                if gray is None:
                    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
                gray_area = cv2.warpPerspective(gray, to_photo, (w, h), flags=flags, borderMode=border)
            if register:
                verdict.registered = registered_crop(photo, H, expected)
            now = time.perf_counter()
            timings["registration"] = timings.get("registration", 0.0) + now - start
            start = now
            if sharp and expected.reference is not None:
                verdict.sharpness = detail_kept(gray_area, expected.reference)
                if verdict.sharpness < self.config.min_sharpness:
                    verdict.reasons.append(f"sharpness: {verdict.sharpness:.2f} of the x-ray's detail kept "
                                           f"(needs {self.config.min_sharpness:g})")
        if area.size == 0:
            verdict.reasons.append("coverage: the photo is too small to show the x-ray")
            return
        r, g, b = cv2.split(np.ascontiguousarray(area))
        brightest = cv2.max(cv2.max(r, g), b)
        verdict.clipped = cv2.countNonZero(cv2.inRange(brightest, _CLIP_LEVEL, 255)) / brightest.size
        if verdict.clipped > self.config.max_clipped:
            verdict.reasons.append(f"exposure: {verdict.clipped:.1%} of the x-ray clipped "
                                   f"(at most {self.config.max_clipped:.1%})")
        timings["sharpness"] = timings.get("sharpness", 0.0) + time.perf_counter() - start


def detail_kept(area: np.ndarray, reference: np.ndarray) -> float:
    """How much of the reference's fine detail the registered photo area reproduces (1 = all); each
    is RGB or already in grey levels.

    Both are reduced to SHARPNESS_SIZE px on the long side; the Laplacian of the photo is regressed on
    the Laplacian of the reference (noise and moire do not correlate with the source and drop out),
    and divided by the same regression of the plain intensities (the photo's overall contrast, which
    veil and exposure change). Blur lowers the first and not the second.
    """
    h, w = area.shape[:2]
    f = SHARPNESS_SIZE / max(h, w)
    size = (max(3, round(w * f)), max(3, round(h * f)))

    def prep(img: np.ndarray) -> np.ndarray:
        g: np.ndarray = (img if img.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
                         ).astype(np.float32)
        g = cv2.resize(g, size, interpolation=cv2.INTER_AREA)
        centred: np.ndarray = g - g.mean()
        return centred

    a, b = prep(area), prep(reference)
    la, lb = cv2.Laplacian(a, cv2.CV_32F), cv2.Laplacian(b, cv2.CV_32F)
    la, lb = la - la.mean(), lb - lb.mean()
    detail = float((la * lb).mean() / max(1e-9, float((lb * lb).mean())))
    contrast = float((a * b).mean() / max(1e-9, float((b * b).mean())))
    return detail / contrast if contrast > 1e-6 else 0.0


def source_to_photo(H: np.ndarray, expected: Expected) -> np.ndarray:
    """Homography from source-image pixel indices to photo pixels (through the letterbox scale)."""
    x, y, w, h = expected.xray
    sw, sh = expected.source_size
    sx, sy = w / sw, h / sh
    # source index i covers [i, i+1) -> screen x + (i + 0.5) * sx at its centre
    A = np.array([[sx, 0, x + 0.5 * sx], [0, sy, y + 0.5 * sy], [0, 0, 1]], np.float64)
    return H @ A


def registered_crop(photo: np.ndarray, H: np.ndarray, expected: Expected) -> np.ndarray:
    """The x-ray area of the photo, rectified to the source image's size and pixel grid."""
    sw, sh = expected.source_size
    return cv2.warpPerspective(photo, source_to_photo(H, expected), (sw, sh),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)


def _detect_at(detector: cv2.aruco.ArucoDetector, image: np.ndarray, f: int) -> tuple[list[np.ndarray],
                                                                                   np.ndarray | None]:
    """Markers searched in `image` reduced f times (a power of 2) and inverted, their corners then
    refined at each doubling of the size up to `image`'s own, so that each refinement starts within a
    pixel or so."""
    levels = [image]
    while len(levels) < f.bit_length():
        h, w = levels[-1].shape[:2]
        levels.append(cv2.resize(levels[-1], (w // 2, h // 2), interpolation=cv2.INTER_AREA))
    corners, ids, _ = detector.detectMarkers(cv2.bitwise_not(levels[-1]))
    if ids is None:
        return [], None
    pts = np.concatenate([c.reshape(-1, 2) for c in corners]).astype(np.float32)
    for level in reversed(levels[:-1]):
        pts = pts * 2 + 0.5  # half-size px i averages px 2i and 2i + 1
        cv2.cornerSubPix(level, pts.reshape(-1, 1, 2), (5, 5), (-1, -1),
                         (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
    return [p.reshape(1, 4, 2) for p in pts.reshape(-1, 4, 2)], ids


@dataclass
class _Located:
    """The markers found in a photo placed on the layout."""

    markers: int  # found, of any id
    corners: int  # corner markers found exactly once
    homography: np.ndarray | None  # screen px -> full photo px; None without all four corners
    sides: dict[str, dict[int, int]]  # digit marker id by side ('L', 'R') and slot index
    complete: bool  # every slot holds exactly one marker and nothing else was found


def _locate(found: dict[int, list[np.ndarray]], layout: FiducialLayout) -> _Located:
    """Homography from the four corner markers, then the digit markers assigned to their slots
    through it, and the homography refitted with all."""
    markers = sum(len(v) for v in found.values())
    slots = layout.slots()
    src, dst = [], []
    corner_slots = {index: (x, y) for kind, index, x, y in slots if kind == "corner"}
    for index, marker_id in enumerate(CORNER_IDS):
        if len(found.get(marker_id, [])) == 1:
            src.append(_marker_corners(*corner_slots[index], layout.marker))
            dst.append(found[marker_id][0])
    sides: dict[str, dict[int, int]] = {"L": {}, "R": {}}
    if len(src) < 4:
        return _Located(markers, len(src), None, sides, False)
    H, _ = cv2.findHomography(np.concatenate(src), np.concatenate(dst), 0)
    digit_slots = [(kind, index, x, y) for kind, index, x, y in slots if kind != "corner"]
    slot_px = np.array([[x + layout.marker / 2, y + layout.marker / 2] for _, _, x, y in digit_slots], np.float64)
    slot_photo = cv2.perspectiveTransform(slot_px[None], H)[0]
    tolerance = _scale(H, slot_px.mean(axis=0)) * layout.marker / 2
    placed = 0
    for marker_id, cs in found.items():
        if marker_id in CORNER_IDS:
            continue
        for c in cs:
            d = np.linalg.norm(slot_photo - c.mean(axis=0), axis=1)
            k = int(np.argmin(d))
            if d[k] > tolerance:
                continue
            kind, index, x, y = digit_slots[k]
            sides[kind][index] = marker_id
            placed += 1
            src.append(_marker_corners(x, y, layout.marker))
            dst.append(c)
    H, _ = cv2.findHomography(np.concatenate(src), np.concatenate(dst), 0)
    complete = markers == len(slots) == 4 + placed and all(len(side) == DIGITS for side in sides.values())
    return _Located(markers, 4, H, sides, complete)


_DICTIONARY = cv2.aruco.getPredefinedDictionary(MARKER_DICT)


def _reading_order(likely: Sequence[int]) -> np.ndarray:
    """The dictionary's ids with `likely` first (each once), the rest in order."""
    first = np.array(list(dict.fromkeys(likely)), np.intp)
    rest = np.setdiff1d(np.arange(len(_DICTIONARY.bytesList)), first)
    return np.concatenate([first, rest])


def _marker_corners(x: int, y: int, side: int) -> np.ndarray:
    """A marker's four outer corners in continuous screen coordinates, in ArUco's order (TL, TR, BR, BL)."""
    return np.array([[x, y], [x + side, y], [x + side, y + side], [x, y + side]], np.float32)


def _scale(H: np.ndarray, point: np.ndarray) -> float:
    """Local magnification (photo px per screen px) of H at a screen point."""
    p = np.array([[point, point + [1, 0], point + [0, 1]]], np.float64)
    q = cv2.perspectiveTransform(p, H)[0]
    a, b = q[1] - q[0], q[2] - q[0]
    return math.sqrt(abs(float(a[0] * b[1] - a[1] * b[0])))


def _xray_magnification(H: np.ndarray | None, expected: Expected) -> float | None:
    """The fewest photo px per screen px H gives any part of the x-ray area, by area: the square root
    of the smallest area scale over its corners (a homography's area scale det(H) / w**3 is extreme at
    a convex region's corners, w being linear in the point)."""
    if H is None:
        return None
    x, y, w, h = expected.xray
    return min(_scale(H, np.array(p, np.float64)) for p in ((x, y), (x + w, y), (x + w, y + h), (x, y + h)))
