"""A session over DICOM files: the monitor draws each film through the session's window, as DICOM's
LINEAR window computed here from the stored values says it should look; studies come from the tags."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import cv2
import numpy as np
import pydicom
from conftest import open_sim_devices, rig_file, session_file

from rig.engine import Engine
from rig.fiducials import fiducial_layout
from rig.images import letterbox_rect
from rig.manifest import Manifest
from rig.plan import Plan
from rig.session import load_session
from rig.store import RunStore

WINDOW = (1500.0, 2500.0)  # center, width in modality units: not any file's own window


def _expected(path: Path) -> np.ndarray:
    """DICOM's LINEAR window (PS3.3 C.11.2.1.2.1) on the rescaled stored values, MONOCHROME1 inverted."""
    ds = pydicom.dcmread(path)
    values = ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
    c, w = WINDOW
    unit = np.clip((values - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        unit = 1 - unit
    return np.floor(unit * 255 + 0.5).astype(np.uint8)


def test_a_dicom_folder_is_shown_through_the_session_window_and_filed_by_its_tags(tmp_path: Path) -> None:
    from rig.demo_dicom import write_dicom_demo

    write_dicom_demo(tmp_path / "dicom")
    films = sorted((tmp_path / "dicom").rglob("*.dcm"))
    broken = pydicom.dcmread(films[0])  # a PACS export without pixels: that item fails, the run goes on
    del broken.PixelData
    broken.SOPInstanceUID = "1.2.3.999"
    broken.save_as(tmp_path / "dicom" / "zz-no-pixels.dcm")
    rig = rig_file(tmp_path)
    session = load_session(session_file(tmp_path, tmp_path, rig, manifest={"folder": str(tmp_path / "dicom")},
                                        conditions=[{"pose": "front", "lighting": "bright"}], retries=0,
                                        window={"center": WINDOW[0], "width": WINDOW[1]}))
    assert session.config.window is not None
    store = RunStore.create(session.output, session.path,
                            Plan.of(session, Manifest(None, None, session.image_folder)))
    devices, _ = open_sim_devices(session.rig_path)
    drawn: list[np.ndarray] = []
    trigger = devices.camera.trigger

    def trigger_and_keep_the_screen():  # type: ignore[no-untyped-def]
        drawn.append(devices.display.frame().copy())  # type: ignore[attr-defined]  # the simulated screen
        return trigger()

    devices.camera.trigger = trigger_and_keep_the_screen  # type: ignore[method-assign]
    reader = RunStore(session.output)
    try:
        Engine(session, store, reader, devices).run()
    finally:
        devices.close()
        store.close()
        reader.close()

    width, height = session.rig.display.width, session.rig.display.height
    band = fiducial_layout(width, height).band
    assert len(drawn) == len(films)
    for frame, film in zip(drawn, films):  # one condition: items in the folder's (sorted) order
        expected = _expected(film)
        x, y, w, h = letterbox_rect(expected.shape[1], expected.shape[0], width, height, band)
        want = cv2.resize(expected, (w, h), interpolation=cv2.INTER_AREA).astype(int)
        got = frame[y:y + h, x:x + w, 0].astype(int)
        assert np.abs(got - want).max() <= 1, f"{film.name}: the screen differs from the window by " \
                                              f"{np.abs(got - want).max()} levels"
    with sqlite3.connect(session.output / "run.sqlite") as db:
        studies = {r[0] for r in db.execute("SELECT study_id FROM images")}
        failed = db.execute("SELECT reason FROM attempts WHERE status = 'failed'").fetchall()
    tags = {f"{ds.PatientID}/{ds.StudyInstanceUID}" for ds in map(pydicom.dcmread, films)}
    assert studies == tags
    assert len(failed) == 1 and "no pixel data" in failed[0][0] and "zz-no-pixels.dcm" in failed[0][0]
