"""Studies to photograph, from a CheXpert-style CSV or a plain folder of images.

Rows are streamed, never all held as objects: the real CheXpert manifest has 223,414 of them.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from rig.errors import ConfigError
from rig.files import atomic_write

CHEXPERT_LABELS = (
    "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
    "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia",
    "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices",
)
SAMPLE_SIZE = 100  # images checked for existence before a run
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}  # what rig/images.py decodes
DICOM_SUFFIXES = (".dcm", ".dicom")
# A folder's DICOM files are identified by their tags: these become the manifest's columns (never a name).
DICOM_COLUMNS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "AccessionNumber")
KEPT_SEPARATOR = _UNIT = "\x1f"  # separates a kept row's fields: image ID, study ID, source, labels...
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # NUL, newline, ...: never part of a real file name
_CHEXPERT_PATH = re.compile(r"(?:^|/)(patient\d+)/(study\d+)/([^/]+)$")
# A plainly good Path: plain names (no control character, backslash or empty part) ending in patient/study/file.
_GOOD_PATH = re.compile(r"(?:[^/\\\x00-\x1f\x7f]+/)*(patient\d+)/(study\d+)/([^/\\\x00-\x1f\x7f]+)")


def cache_folder() -> Path:
    """Where rig remembers what it learnt from reading large files ($XDG_CACHE_HOME/rig, ~/.cache/rig)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rig"


@dataclass(frozen=True, slots=True)
class ManifestRow:
    image_id: str  # patientNNNNN/studyN/viewK_xxx.jpg
    study_id: str  # patientNNNNN/studyN
    source: str  # the manifest's own Path value, unchanged
    file: str  # where the image is on disk (a str: Path objects cost seconds over 223k rows)
    labels: tuple[str, ...]  # the manifest's other columns, unchanged


class Manifest:
    """A manifest source: its label columns and a fresh row stream on every `rows()` call."""

    def __init__(self, csv_path: Path | None, image_root: Path | None, folder: Path | None) -> None:
        self.csv_path, self.image_root, self.folder = csv_path, image_root, folder
        self._sample: list[str] | None = None  # image files spread over the manifest, from the last full read
        self._dicom_rows: dict[tuple[str, int, int], ManifestRow | None] = {}  # a folder's DICOM tags, read once
        self._content: str | None = None  # sha256 of the CSV's bytes, once `recall` needed it
        self._kept: list[str] | None = None  # the rows of a full read asked to keep them (`rows(keep=True)`)
        if csv_path is not None:
            if not csv_path.is_file():
                raise ConfigError(f"{csv_path}: manifest not found; fix 'manifest.csv' in the session file")
            if image_root is None or not image_root.is_dir():
                raise ConfigError(f"{image_root}: image root is not a folder; fix 'manifest.image_root'")
            with csv_path.open(newline="", encoding="utf-8-sig") as f:  # -sig: Excel's byte order mark
                try:
                    header = next(csv.reader(f), None)
                except UnicodeDecodeError as e:
                    raise ConfigError(_not_utf8(csv_path, e)) from None
                except csv.Error as e:
                    raise ConfigError(_csv_problem(csv_path, 1, e)) from None
            if not header or header[0] != "Path":
                raise ConfigError(f"{csv_path}:1: the first column must be 'Path' (CheXpert form)")
            if len(set(header)) != len(header):
                raise ConfigError(f"{csv_path}:1: duplicate column names; make each column name unique")
            self.label_columns: tuple[str, ...] = tuple(header[1:])
        else:
            assert folder is not None
            if not folder.is_dir():
                raise ConfigError(f"{folder}: image folder not found; fix 'manifest.folder'")
            has_dicom = any(p.suffix.lower() in DICOM_SUFFIXES for p in folder.rglob("*"))
            self.label_columns = DICOM_COLUMNS if has_dicom else ()

    @property
    def describe(self) -> str:
        return str(self.csv_path or self.folder)

    def recall(self, what: str) -> dict[str, Any] | None:
        """What a full read of this very CSV (same bytes, same image root) found earlier, in any process,
        under `what`; None if nothing is remembered (or for a folder, whose files may change).

        A resume must not spend a second re-reading 223,414 unchanged rows: the file's bytes are hashed
        (about 0.1 s) and looked up in the user's cache folder. The image sample comes back with it."""
        path = self._memory(what)
        if path is None:
            return None
        try:
            facts: dict[str, Any] = json.loads(path.read_text())
            self._sample = [str(f) for f in facts.get("sample", [])]
        except (OSError, ValueError, AttributeError, TypeError):  # unreadable or not what remember() wrote
            return None
        return facts

    def remember(self, what: str, facts: dict[str, Any]) -> None:
        """Keep `facts` (with the image sample of the read just finished) for `recall`; best effort."""
        path = self._memory(what)
        if path is not None and self._sample is not None:
            with contextlib.suppress(OSError):
                atomic_write(path, json.dumps({**facts, "sample": self._sample}), make_dirs=True)

    def _memory(self, what: str) -> Path | None:
        if self.csv_path is None:
            return None
        if self._content is None:
            try:
                with self.csv_path.open("rb") as f:
                    self._content = hashlib.file_digest(f, "sha256").hexdigest()
            except OSError:
                return None
        where = hashlib.sha256(f"{what}\0{self._content}\0{self.image_root}".encode()).hexdigest()[:40]
        return cache_folder() / "manifests" / f"{where}.json"

    def rows(self, keep: bool = False) -> Iterator[ManifestRow]:
        """Yield every image once, in manifest order; bad rows raise a ConfigError naming the line.

        `keep`: also keep the rows, one compact string each (about 45 MB for CheXpert's 223,414), so that
        the next reads replay them instead of parsing the CSV again, until `forget_rows` (the run store
        calls it once the plan is written): a new run reads the manifest for its digest, then for its store.
        """
        if self._kept is not None:
            yield from self._replay(self._kept)
            return
        seen: set[str] = set()
        sample: list[str] = []  # every `stride`-th file, thinned as it grows: spread over the whole manifest
        stride = 1
        kept: list[str] | None = [] if keep and self.csv_path is not None else None
        source = self._csv_rows() if self.csv_path is not None else self._folder_rows()
        for where, row in source:
            if row.image_id in seen:
                where = f"{self.csv_path}:{where}" if isinstance(where, int) else where  # a fast CSV row's line
                raise ConfigError(f"{where}: duplicate image ID '{row.image_id}'; each image may appear once")
            if len(seen) % stride == 0:
                sample.append(row.file)
                if len(sample) == 2 * SAMPLE_SIZE:
                    sample, stride = sample[::2], stride * 2
            seen.add(row.image_id)
            if kept is not None:
                line = _UNIT.join((row.image_id, row.study_id, row.source, *row.labels))
                if line.count(_UNIT) == 2 + len(row.labels):
                    kept.append(line)
                else:  # a field holds the separator itself: this manifest is parsed every time
                    kept = None
            yield row
        if not seen:
            raise ConfigError(f"{self.describe}: the manifest lists no images; add some")
        self._sample = sample[::max(1, len(sample) // SAMPLE_SIZE)][:SAMPLE_SIZE]
        self._kept = kept

    def kept_rows(self) -> list[str] | None:
        """The kept rows as kept (image ID, study ID, source, then each label, joined by KEPT_SEPARATOR),
        or None: for the run store's build, which turns them into its rows without row objects."""
        return self._kept

    def forget_rows(self) -> None:
        """Let the kept rows go: later reads parse the CSV again."""
        self._kept = None

    def _replay(self, kept: list[str]) -> Iterator[ManifestRow]:
        assert self.image_root is not None
        root = self.image_root.resolve()
        for line in kept:
            image_id, study_id, source, *labels = line.split(_UNIT)
            yield ManifestRow(image_id, study_id, source, f"{root}/{source}", tuple(labels))

    def _csv_rows(self) -> Iterator[tuple[object, ManifestRow]]:
        """The CSV's rows. A row whose Path is plainly good (one regular expression) is taken at once;
        any other goes through `_checked_row`, which accepts it or words what is wrong with it: 223,414
        rows must read in well under a second."""
        assert self.csv_path is not None and self.image_root is not None
        root = self.image_root.resolve()
        width = len(self.label_columns) + 1
        good = _GOOD_PATH.fullmatch
        with self.csv_path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            start = 1  # the line the record being read starts on
            try:
                next(reader)
                start = reader.line_num + 1
                for record in reader:
                    if record:
                        path = record[0]
                        m = good(path) if len(record) == width else None
                        if m is not None and "/." not in path and path[0] != ".":  # no '.', '..' or hidden part
                            study = f"{m[1]}/{m[2]}"
                            yield start, ManifestRow(f"{study}/{m[3]}", study, path, f"{root}/{path}",
                                                     tuple(record[1:]))
                        else:
                            where = _Where(self.csv_path, start)
                            yield where, _checked_row(record, width, reader.line_num, root, where)
                    start = reader.line_num + 1
            except UnicodeDecodeError as e:
                raise ConfigError(_not_utf8(self.csv_path, e)) from None
            except csv.Error as e:
                raise ConfigError(_csv_problem(self.csv_path, start, e)) from None

    def check_sample(self, field: str) -> str | None:
        """Check that about 100 images spread over the manifest exist, before anything moves.

        The sample is taken while `rows()` is read (run it to the end first: no extra pass over a
        million rows). Most of it missing (a wrong or empty image root) raises a ConfigError naming
        `field`; a few missing returns a warning line (those items will fail). Folder sources only
        list files that exist.
        """
        if self.csv_path is None:
            return None
        if self._sample is None:
            for _ in self.rows():
                pass
        sample = self._sample or []
        missing = [f for f in sample if not os.path.isfile(f)]
        if not missing:
            return None
        what = f"{len(missing)} of {len(sample)} images sampled from the manifest are missing (e.g. {missing[0]})"
        if 2 * len(missing) >= len(sample):
            raise ConfigError(f"{field}: {what}; fix 'manifest.image_root' (now {self.image_root})")
        return f"{what}; their items will fail"

    def _folder_rows(self) -> Iterator[tuple[str, ManifestRow]]:
        assert self.folder is not None
        root = self.folder.resolve()
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        blank = ("",) * len(self.label_columns)
        for file in files:
            rel = PurePosixPath(file.relative_to(root).as_posix())
            if file.suffix.lower() in DICOM_SUFFIXES:
                row = self._dicom_row(file, rel)
                if row is not None:
                    _check_ids(file, row)
                    yield str(file), row
                    continue
            study = str(rel.parent) if str(rel.parent) != "." else rel.stem
            row = ManifestRow(str(rel), study, str(rel), str(file), blank)
            _check_ids(file, row)
            yield str(file), row

    def _dicom_row(self, file: Path, rel: PurePosixPath) -> ManifestRow | None:
        """A DICOM file's row: study and image IDs from its tags (PatientID/StudyInstanceUID/SOPInstanceUID),
        its identifiers as columns. None if its tags cannot be read: the path-based row then fails its item
        with the reason when it is shown, and never stops the plan. Planning reads the rows several times:
        each file's tags are read once (again only if the file changed)."""
        from rig.dicom import dicom_identity  # pydicom only for folders that hold DICOM files
        from rig.errors import ImageError

        stat = file.stat()
        key = (str(file), stat.st_size, stat.st_mtime_ns)
        if key in self._dicom_rows:
            return self._dicom_rows[key]
        try:
            ident = dicom_identity(file)
        except ImageError:
            row = None
        else:
            columns = ident.columns()
            row = ManifestRow(ident.image_id, ident.study_id, str(rel), str(file),
                              tuple(columns[c] for c in DICOM_COLUMNS))
        self._dicom_rows[key] = row
        return row


def _not_utf8(path: Path, e: UnicodeDecodeError) -> str:
    return f"{path}: contains bytes that are not UTF-8 ({e.reason}); save the manifest as UTF-8 CSV"


def _csv_problem(path: Path, start: int, e: csv.Error) -> str:
    """A CSV error as one line naming the line where the failing record starts (a field over the csv
    module's 128 KiB limit: an unterminated quote, a runaway line)."""
    problem = ("a field longer than the 128 KiB limit starts in this row (an unterminated quote?)"
               if "field limit" in str(e) else f"not valid CSV ({e})")
    return f"{path}:{start}: {problem}; fix that row"


class _Where:
    """`file:line` for error messages, formatted only when an error needs it."""

    __slots__ = ("file", "line")

    def __init__(self, file: Path, line: int) -> None:
        self.file, self.line = file, line

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


def safe_join(root: Path, relative: str, where: object) -> str:
    """Join a manifest path under its root, refusing absolute paths and `..`.

    Pure string work (no file system calls): 223,414 rows must parse in about a second. A symbolic
    link inside the root that points out of it is caught when the image is loaded (`inside_root`).
    """
    if relative.startswith("/") or "\\" in relative or ".." in relative.split("/"):
        raise ConfigError(f"{where}: path '{relative}' escapes the image root; use a path inside it")
    return f"{root}/{relative}"


def inside_root(file: Path, root: Path) -> bool:
    """True when the real file (links followed) lies under the real root."""
    return file.resolve().is_relative_to(root.resolve())


def _check_ids(where: object, row: ManifestRow) -> None:
    """Image and study IDs name where photos are filed: relative paths of plain names only."""
    for kind, ident in (("image", row.image_id), ("study", row.study_id)):
        parts = ident.split("/")
        if ident.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ConfigError(f"{where}: {kind} ID '{ident}' is not a relative path of plain names (it "
                              "names where photos are filed); fix that row")


def _checked_row(record: list[str], width: int, line_num: int, root: Path, where: _Where) -> ManifestRow:
    """A CSV row the fast path did not take: accepted after every check, or a ConfigError naming the
    line and what to fix."""
    if len(record) != width:
        if line_num > where.line:  # a quoted field swallowed the lines after it
            raise ConfigError(f"{where}: a quote opened in this row is not closed before line "
                              f"{line_num}; close the quote (or double it: \"\")")
        raise ConfigError(f"{where}: expected {width} columns, found {len(record)}; fix that row")
    path = record[0]
    bad = _CONTROL.search(path)
    if bad:
        raise ConfigError(f"{where}: Path contains the control character {bad.group()!r}; remove it from that row")
    m = _CHEXPERT_PATH.search(path)
    if not m:
        raise ConfigError(f"{where}: Path '{path}' is not .../patientNNNNN/studyN/<view file>")
    file = safe_join(root, path, where)
    study = f"{m.group(1)}/{m.group(2)}"
    row = ManifestRow(f"{study}/{m.group(3)}", study, path, file, tuple(record[1:]))
    _check_ids(where, row)
    return row
