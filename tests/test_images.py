"""The decoder registry: formats found by their bytes, 16-bit sources shown as 8-bit, and a new format
plugged in with one registration (the seam a DICOM decoder uses)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import png_claiming

from rig.images import DECODERS, OPENCV, Decoder, DecoderRegistry, Mode, decode_image, prepare
from rig.tone import Window


def test_sixteen_bit_png_decodes_to_its_eight_bit_high_byte(tmp_path: Path) -> None:
    ramp = (np.arange(256 * 64, dtype=np.uint32).reshape(64, 256) * 4).astype(np.uint16)
    path = tmp_path / "deep.png"
    assert cv2.imwrite(str(path), ramp)
    gray = decode_image(path, "gray")
    assert gray.dtype == np.uint8 and gray.shape == ramp.shape
    assert np.abs(gray.astype(int) - (ramp >> 8)).max() <= 1
    assert prepare(path, 320, 200).canvas.dtype == np.uint8


def test_a_file_is_decoded_by_its_magic_bytes_not_its_suffix(tmp_path: Path) -> None:
    path = tmp_path / "really_a_png.jpg"
    assert cv2.imwrite(str(tmp_path / "x.png"), np.full((8, 12), 200, np.uint8))
    path.write_bytes((tmp_path / "x.png").read_bytes())
    assert DECODERS.decoder_for(path, path.read_bytes()[:132]) is OPENCV
    assert decode_image(path, "gray").shape == (8, 12)


def test_unknown_format_names_the_known_suffixes(tmp_path: Path) -> None:
    path = tmp_path / "scan.xyz"
    path.write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"scan.xyz \(no decoder knows this format; known: .*\.png"):
        decode_image(path)


def _toy_registry() -> DecoderRegistry:
    """A format of its own: 'TOY!' then width and height bytes, then gray pixels."""
    def size(path: Path) -> tuple[int, int]:
        head = path.read_bytes()[:6]
        return head[4], head[5]

    def decode(path: Path, mode: Mode, window: Window | None) -> np.ndarray:  # an 8-bit format: no window
        data = path.read_bytes()
        gray = np.frombuffer(data[6:], np.uint8).reshape(data[5], data[4])
        return gray if mode == "gray" else cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)

    registry = DecoderRegistry(list(DECODERS.decoders))
    registry.register(Decoder("toy", (".toy",), ((0, b"TOY!"),), size, decode))
    return registry


def test_one_registration_plugs_a_new_format_in_with_the_pixel_cap(tmp_path: Path) -> None:
    registry = _toy_registry()
    path = tmp_path / "a.toy"
    path.write_bytes(b"TOY!" + bytes([4, 3]) + bytes(range(12)))
    assert decode_image(path, "gray", registry=registry).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert decode_image(path, "color", registry=registry).shape == (3, 4, 3)
    with pytest.raises(ValueError, match="4x3 .* over max_image_pixels"):
        decode_image(path, "gray", max_pixels=11, registry=registry)
    with pytest.raises(ValueError, match="no decoder knows this format"):
        decode_image(path, "gray")  # the default registry has not learnt it


def test_the_pixel_cap_is_checked_from_the_header_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(60000, 60000))
    with pytest.raises(ValueError, match="60000x60000"):
        decode_image(path)


def test_a_jpeg_far_larger_than_its_screen_area_is_decoded_at_a_dct_reduced_size(tmp_path: Path) -> None:
    """A full-size CheXpert film (2320x2828) shown about 850 px tall needs no full decode: libjpeg's DCT
    scaling reads it at 1/2 for a fraction of the cost, and the frame looks the same."""
    yy, xx = np.mgrid[0:2828, 0:2320]
    film = ((np.sin(xx / 37.0) + np.cos(yy / 53.0)) * 60 + 128).astype(np.uint8)
    path = tmp_path / "view1_frontal.jpg"
    assert cv2.imwrite(str(path), film, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert decode_image(path, "gray", fit=(1000, 1200)).shape == (1414, 1160)  # 1/2: still no upscaling
    assert decode_image(path, "gray", fit=(1200, 1500)).shape == (2828, 2320)  # 1/2 would be too small
    fast = prepare(path, 1280, 1024, band=120)
    full = cv2.cvtColor(film, cv2.COLOR_GRAY2RGB)
    x, y, w, h = fast.xray
    assert fast.source_size == (2320, 2828)
    expected = cv2.resize(full, (w, h), interpolation=cv2.INTER_AREA)
    assert np.abs(fast.canvas[y:y + h, x:x + w].astype(int) - expected).mean() < 1.0


def _png_turned_by_exif(image: np.ndarray) -> bytes:
    """A PNG whose eXIf chunk says 'rotate 90 degrees clockwise to view' (orientation 6)."""
    import struct
    import zlib

    ok, png = cv2.imencode(".png", image)
    assert ok
    tiff = b"MM\x00*\x00\x00\x00\x08" + struct.pack(">HHHIHH", 1, 0x0112, 3, 1, 6, 0) + b"\x00\x00\x00\x00"
    chunk = struct.pack(">I", len(tiff)) + b"eXIf" + tiff + struct.pack(">I", zlib.crc32(b"eXIf" + tiff))
    data = png.tobytes()
    ihdr_end = 8 + 8 + 13 + 4
    return data[:ihdr_end] + chunk + data[ihdr_end:]


def test_a_png_the_decoder_turns_upright_is_letterboxed_as_shown(tmp_path: Path) -> None:
    path = tmp_path / "turned.png"
    path.write_bytes(_png_turned_by_exif(np.full((300, 600, 3), 200, np.uint8)))
    shown = decode_image(path)
    prepared = prepare(path, 1600, 1200)
    x, y, w, h = prepared.xray
    assert prepared.source_size == (shown.shape[1], shown.shape[0])
    assert abs(w / h - shown.shape[1] / shown.shape[0]) < 0.01
