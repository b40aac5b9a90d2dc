"""Avatar registry: detect the face once, store portrait + crop box + 68 landmarks in SQLite.

Requests then carry only `avatar_id`; the lip-sync step reads the prepared data, never a detector.
Writes are single transactions, so a failed registration stores nothing and a replaced avatar is
never seen half-written by a concurrent reader. The serving models open the store read-only (in a pod
it sits on a read-only mount, written only by the avatars Job): SQLite's rollback journal, not WAL, so
a reader needs no write access at all (a WAL reader writes the -shm file) and the file is safe on a
network filesystem shared across nodes, which WAL is not.
"""

from __future__ import annotations

import os
import re
import sqlite3
import urllib.parse
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from talkserve.spec import FACE_SIZE

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Haar boxes stop above the chin; Wav2Lip's own S3FD pads the bottom too. Fractions of the box.
PAD_TOP, PAD_BOTTOM, PAD_SIDES = 0.0, 0.2, 0.05
MAX_SIDE = 1024  # portraits are streamed as raw RGB frames; bound the per-frame bytes

SCHEMA = """
CREATE TABLE IF NOT EXISTS avatars (
    id TEXT PRIMARY KEY,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    x1 INTEGER NOT NULL, y1 INTEGER NOT NULL, x2 INTEGER NOT NULL, y2 INTEGER NOT NULL,
    portrait_png BLOB NOT NULL,
    detector TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (datetime('now')),
    landmarks BLOB
)
"""
DETECTOR = "opencv-haar-frontalface+dlib-68"


class AvatarError(ValueError):
    """A registration or lookup that cannot proceed; the message names the problem."""


@dataclass(frozen=True)
class Avatar:
    id: str
    portrait: np.ndarray  # (H, W, 3) uint8 RGB
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 of the pasted face region
    landmarks: np.ndarray = field(compare=False)  # (68, 2) float32 x, y in portrait pixels (iBUG 300-W order)

    @cached_property
    def face(self) -> np.ndarray:
        """(96, 96, 3) uint8 RGB crop that Wav2Lip animates."""
        x1, y1, x2, y2 = self.box
        return cv2.resize(self.portrait[y1:y2, x1:x2], (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)


def decode_image(data: bytes, source: str = "image") -> np.ndarray:
    """Bytes of a PNG/JPEG/... → (H, W, 3) uint8 RGB; raises AvatarError if it is not an image."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if img is None:
        raise AvatarError(f"{source}: not a readable image file")
    if max(img.shape[:2]) > MAX_SIDE:
        scale = MAX_SIDE / max(img.shape[:2])
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def detect_face(rgb: np.ndarray, source: str = "image") -> tuple[int, int, int, int]:
    """Largest frontal face (OpenCV Haar cascade shipped in opencv), padded for Wav2Lip."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    min_side = max(32, min(rgb.shape[:2]) // 10)
    faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    if len(faces) == 0:
        raise AvatarError(f"{source}: no face found (needs one frontal face)")
    x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
    height, width = rgb.shape[:2]
    x1 = max(0, int(x - PAD_SIDES * w))
    x2 = min(width, int(x + w + PAD_SIDES * w))
    y1 = max(0, int(y - PAD_TOP * h))
    y2 = min(height, int(y + h + PAD_BOTTOM * h))
    return x1, y1, x2, y2


def find_landmarks(rgb: np.ndarray, box: tuple[int, int, int, int], source: str = "image") -> np.ndarray:
    from talkserve.lipsync.landmarks import LandmarkError, detect

    try:
        return detect(rgb, near=box, source=source)
    except LandmarkError as e:
        raise AvatarError(str(e)) from None


def prepare_portrait(rgb: np.ndarray, source: str = "image") -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The face box Wav2Lip crops and the face's 68 landmarks, both in portrait pixels."""
    box = detect_face(rgb, source)
    return box, find_landmarks(rgb, box, source)


def _landmark_blob(lm: np.ndarray) -> bytes:
    return np.asarray(lm, "<f4").reshape(68, 2).tobytes()


def _is_wal(path: Path) -> bool:
    """SQLite header bytes 18-19 are 2 in WAL mode (sqlite.org/fileformat.html)."""
    with open(path, "rb") as f:
        return f.read(20)[18:20] == b"\x02\x02"


def _prepare(image_path: str | Path, avatar_id: str) -> tuple[tuple, Avatar]:
    """The row to store for one portrait, and the Avatar it holds (raises AvatarError)."""
    if not ID_PATTERN.match(avatar_id):
        raise AvatarError(f"avatar id {avatar_id!r}: use 1-64 letters, digits, '_', '.', '-'")
    path = Path(image_path)
    if not path.is_file():
        raise AvatarError(f"{path}: no such file")
    rgb = decode_image(path.read_bytes(), str(path))
    box, lm = prepare_portrait(rgb, str(path))
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok, "PNG encoding of a decoded image cannot fail"
    row = (avatar_id, rgb.shape[1], rgb.shape[0], *box, png.tobytes(), DETECTOR, _landmark_blob(lm))
    return row, Avatar(avatar_id, rgb, box, lm)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def portraits_in(folder: Path) -> list[tuple[Path, str]]:
    """(image, id) for every portrait in `folder`, the id being the file's stem (sorted by name)."""
    if not folder.is_dir():
        raise AvatarError(f"{folder}: no such folder")
    # ConfigMap volumes hold each file behind a `..data` symlink and dotted entries: skip those
    found = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise AvatarError(f"{folder}: no portraits ({', '.join(IMAGE_SUFFIXES)})")
    return [(p, p.stem) for p in found]


class AvatarStore:
    """SQLite-backed avatar registry. Safe to share between processes.

    `read_only=True` (the serving models) never writes or creates anything: a missing store is an
    empty one whose lookups name the path, and the store may sit on a read-only filesystem."""

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path, self.read_only = Path(path), read_only
        self._schema_ready = False  # the serving models look avatars up per request: set up once
        self._has_landmarks = True
        self._decoded: dict[str, tuple[bytes, Avatar]] = {}  # id → (stored PNG, decoded avatar)

    def _connect(self) -> sqlite3.Connection:
        return self._connect_read_only() if self.read_only else self._connect_writable()

    def _connect_writable(self) -> sqlite3.Connection:
        if not self._schema_ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        if not self._schema_ready:
            # persistent in the file; converts a store made in WAL mode before, so read-only mounts can read it
            con.execute("PRAGMA journal_mode=DELETE")
            con.execute(SCHEMA)
            columns = {r[1] for r in con.execute("PRAGMA table_info(avatars)")}
            if "landmarks" not in columns:  # a store made before landmarks were kept
                con.execute("ALTER TABLE avatars ADD COLUMN landmarks BLOB")
            self._schema_ready = True
        return con

    def _connect_read_only(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise AvatarError(f"avatar store {self.path} does not exist (register avatars with `talkserve avatar add`)")
        # once per store, not per request: writers leave it in rollback-journal mode
        if not self._schema_ready and _is_wal(self.path) and not os.access(self.path.parent, os.W_OK):
            raise AvatarError(f"avatar store {self.path} is in WAL mode, which a read-only mount cannot read; open it "
                              "read-write once (`talkserve avatar list --db ...`) to convert it")
        uri = f"file:{urllib.parse.quote(str(self.path.absolute()))}?mode=ro"
        con = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        if not self._schema_ready:
            try:
                columns = {r[1] for r in con.execute("PRAGMA table_info(avatars)")}
            except sqlite3.DatabaseError as e:
                con.close()
                raise AvatarError(f"avatar store {self.path}: {e}") from None
            if not columns:
                con.close()
                raise AvatarError(f"avatar store {self.path} holds no avatars table")
            self._has_landmarks = "landmarks" in columns  # an older store: found on read, kept in memory
            self._schema_ready = True
        return con

    def add(self, image_path: str | Path, avatar_id: str, replace: bool = False) -> Avatar:
        return self.add_many([(image_path, avatar_id)], replace)[0]

    def add_many(self, items: list[tuple[str | Path, str]], replace: bool = False) -> list[Avatar]:
        """Register (image, id) pairs in one transaction: every face is found before anything is
        written, so one bad portrait stores none of them and leaves the stored ones as they were."""
        if self.read_only:
            raise AvatarError(f"avatar store {self.path} is opened read-only")
        ids = [avatar_id for _, avatar_id in items]
        if len(set(ids)) != len(ids):
            raise AvatarError(f"avatar ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
        prepared = [_prepare(path, avatar_id) for path, avatar_id in items]
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            for row, avatar in prepared:
                try:
                    con.execute(
                        f"{verb} INTO avatars (id, width, height, x1, y1, x2, y2, portrait_png, detector, landmarks)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        row,
                    )
                except sqlite3.IntegrityError:
                    con.execute("ROLLBACK")
                    raise AvatarError(f"avatar id {avatar.id!r} already exists (use --replace)") from None
            con.execute("COMMIT")
        finally:
            con.close()
        return [avatar for _, avatar in prepared]

    def get(self, avatar_id: str) -> Avatar:
        con = self._connect()
        try:
            landmarks = "landmarks" if self._has_landmarks else "NULL"
            row = con.execute(
                f"SELECT x1, y1, x2, y2, portrait_png, {landmarks} FROM avatars WHERE id = ?", (avatar_id,)
            ).fetchone()
        finally:
            con.close()
        if row is None:
            raise AvatarError(f"avatar_id {avatar_id!r} is not registered")
        *box, png, blob = row
        cached = self._decoded.get(avatar_id)
        if cached and cached[0] == png and cached[1].box == tuple(box):
            return cached[1]  # same stored bytes: skip the PNG decode (the costly part) and the crop
        rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        # rows registered before landmarks were stored: find them now (kept in this process only)
        lm = np.frombuffer(blob, "<f4").reshape(68, 2).copy() if blob else find_landmarks(rgb, tuple(box), avatar_id)
        avatar = Avatar(avatar_id, rgb, tuple(box), lm)
        self._decoded[avatar_id] = (png, avatar)
        return avatar

    def exists(self, avatar_id: str) -> bool:
        if self.read_only and not self.path.is_file():
            return False
        con = self._connect()
        try:
            return con.execute("SELECT 1 FROM avatars WHERE id = ?", (avatar_id,)).fetchone() is not None
        finally:
            con.close()

    def list(self) -> list[tuple[str, int, int, str]]:
        con = self._connect()
        try:
            return con.execute("SELECT id, width, height, created_at FROM avatars ORDER BY id").fetchall()
        finally:
            con.close()
