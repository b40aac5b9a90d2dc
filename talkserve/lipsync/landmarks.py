"""68-point facial landmarks (iBUG 300-W layout) from dlib, and what lip-sync reads from them.

The detector is dlib's HOG face detector + its 68-point shape predictor, whose weights ship in the
`face-recognition-models` package (installed with `dlib-bin`, a prebuilt dlib). Chosen over
MediaPipe because MediaPipe's wheel no longer carries its face-mesh model and needs
opencv-contrib (which clashes with opencv-python-headless). Note the predictor's licence: it is
trained on iBUG 300-W, whose terms exclude commercial use; it runs at avatar registration and in
the quality gates only, and the landmarks it stores are plain numbers any detector can supply.

Indices: jaw 0–16 (chin 8), brows 17–26, nose 27–35, eyes 36–47, outer lips 48–59 (corners 48
and 54), inner lips 60–67 (upper 61–63, lower 65–67).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

OUTER_LIPS, INNER_LIPS = slice(48, 60), slice(60, 68)
INNER_UPPER, INNER_LOWER = [61, 62, 63], [67, 66, 65]  # paired top/bottom across the mouth


class LandmarkError(ValueError):
    """No face (or no usable landmarks) in an image; the message names the source."""


@lru_cache(maxsize=1)
def _models():
    import dlib

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise LandmarkError("landmarks need the face-recognition-models package (pip install face-recognition-models)")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "shape_predictor_68_face_landmarks.dat"
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(path))


def detect(rgb: np.ndarray, near: tuple[int, int, int, int] | None = None, source: str = "image") -> np.ndarray:
    """(68, 2) float32 x, y of the face in `rgb` (uint8 RGB); the one overlapping `near` most, else
    the largest. When dlib's detector finds nothing but `near` is given, the predictor starts from
    that box (Haar and HOG boxes differ a little; the predictor is robust to it)."""
    import dlib

    detector, predictor = _models()
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    rects = list(detector(rgb, 1))
    if near is not None:
        x1, y1, x2, y2 = near

        def overlap(r) -> float:
            w = max(0, min(r.right(), x2) - max(r.left(), x1))
            h = max(0, min(r.bottom(), y2) - max(r.top(), y1))
            return w * h

        rects = [r for r in rects if overlap(r) > 0]
        rects.sort(key=overlap, reverse=True)
        if not rects:  # Haar's box is padded below the chin; shrink it to a face-sized square
            side = min(x2 - x1, y2 - y1)
            rects = [dlib.rectangle(int(x1), int(y1), int(x1 + side), int(y1 + side))]
    else:
        rects.sort(key=lambda r: r.width() * r.height(), reverse=True)
    if not rects:
        raise LandmarkError(f"{source}: no face found for landmarks")
    shape = predictor(rgb, rects[0])
    return np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], np.float32)


def detect_in_box(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """(68, 2) landmarks of the face known to fill `box` (no detector pass: for face crops)."""
    import dlib

    _, predictor = _models()
    shape = predictor(np.ascontiguousarray(rgb, dtype=np.uint8), dlib.rectangle(*map(int, box)))
    return np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], np.float32)


def mouth_width(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[54] - lm[48]))


def mouth_opening(lm: np.ndarray) -> float:
    """Inner-lip gap over mouth width: 0 = lips together, ~0.3 = wide open ("ah")."""
    gap = np.mean(lm[INNER_LOWER, 1] - lm[INNER_UPPER, 1])
    return float(max(gap, 0.0) / max(mouth_width(lm), 1e-6))


def mouth_box(lm: np.ndarray, shape: tuple[int, int], open_room: float = 0.0) -> tuple[int, int, int, int]:
    """x1, y1, x2, y2 of the lower face that a mouth movement may change: between the jaw's sides,
    from the nose's base to below the chin (plus `open_room` mouth widths for a dropped jaw)."""
    h, w = shape[:2]
    mw = mouth_width(lm)
    x1 = int(np.floor(min(lm[3, 0], lm[48, 0] - 0.4 * mw)))
    x2 = int(np.ceil(max(lm[13, 0], lm[54, 0] + 0.4 * mw)))
    y1 = int(np.floor(lm[33, 1] - 0.1 * mw))
    y2 = int(np.ceil(lm[8, 1] + (0.25 + open_room) * mw))
    return max(0, x1), max(0, y1), min(w, x2), min(h, y2)
