"""Calibration / distillation / held-out data: a user directory, or built from what ships with us.

A user directory holds `texts/*.txt` (one sentence a line), `audio/*.wav` (mono PCM) and
`faces/*.png|jpg` (portraits; the face is detected as for avatars). Without one: the starter
corpus's replies, their speech from the Piper voice (sampling noise off, so runs repeat), and the
sample portrait with small shifts and lighting changes. The last `held_out` items of each list
are only ever used by the gates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from talkserve.spec import FACE_SIZE
from talkserve.voice.audio import read_wav

SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass
class Split:
    train: list
    held_out: list


def split(items: list, held_out: int) -> Split:
    if len(items) <= held_out:
        raise ValueError(f"need more than {held_out} items to hold {held_out} out, got {len(items)}")
    return Split(items[:-held_out], items[-held_out:])


def builtin_texts() -> list[str]:
    """Distinct sentences of the starter corpus's replies, in a fixed order."""
    from talkserve.models.corpus import pairs

    sentences = [s for _, reply in pairs() for s in SENTENCE.split(reply)]
    return list(dict.fromkeys(s.strip() for s in sentences if len(s.split()) >= 3))


def _face_crop(rgb: np.ndarray, source: str) -> np.ndarray:
    from talkserve.lipsync.avatars import detect_face

    x1, y1, x2, y2 = detect_face(rgb, source)
    return cv2.resize(rgb[y1:y2, x1:x2], (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)


def _variants(face: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """Small shifts, scales and lighting changes of one crop (what a detector's jitter looks like)."""
    rng = np.random.default_rng(seed)
    out = [face]
    for _ in range(n - 1):
        scale, dx, dy = rng.uniform(0.92, 1.08), *rng.uniform(-4, 4, 2)
        m = cv2.getRotationMatrix2D((FACE_SIZE / 2, FACE_SIZE / 2), rng.uniform(-5, 5), scale)
        m[:, 2] += (dx, dy)
        warped = cv2.warpAffine(face, m, (FACE_SIZE, FACE_SIZE), borderMode=cv2.BORDER_REFLECT)
        out.append(np.clip(warped * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8))
    return out


class DataSource:
    def __init__(self, data_dir: Path | None = None, held_out: int = 6, max_texts: int = 40):
        self.dir = data_dir
        self.held_out = held_out
        self.max_texts = max_texts
        if data_dir is not None and not Path(data_dir).is_dir():
            raise ValueError(f"data_dir {data_dir} is not a directory")

    def _files(self, sub: str, patterns: tuple[str, ...]) -> list[Path]:
        if self.dir is None:
            return []
        return sorted(p for pat in patterns for p in (Path(self.dir) / sub).glob(pat))

    @cached_property
    def texts(self) -> Split:
        files = self._files("texts", ("*.txt",))
        lines = [ln.strip() for f in files for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return split((lines or builtin_texts())[: self.max_texts], self.held_out)

    @cached_property
    def speech(self) -> Split:
        """(audio float32, sample rate) pairs; user WAVs, else the Piper voice reading `texts`."""
        files = self._files("audio", ("*.wav",))
        if files:
            return split([read_wav(f) for f in files], self.held_out)
        from talkserve.models.piper_tts import PiperTTS
        from talkserve.paths import default_voice

        tts = PiperTTS(*default_voice(), noise_scale=0.0, noise_w_scale=0.0)
        every = [*self.texts.train, *self.texts.held_out]
        return split([(tts.synthesize(t), tts.sample_rate) for t in every], self.held_out)

    @cached_property
    def faces(self) -> Split:
        """96×96 RGB face crops."""
        from talkserve.lipsync.avatars import decode_image
        from talkserve.paths import SAMPLE_PORTRAIT

        files = self._files("faces", ("*.png", "*.jpg", "*.jpeg"))
        crops = [_face_crop(decode_image(f.read_bytes(), str(f)), str(f)) for f in files]
        if len(crops) <= self.held_out:
            base = crops or [_face_crop(decode_image(SAMPLE_PORTRAIT.read_bytes()), "sample portrait")]
            crops = [v for i, c in enumerate(base) for v in _variants(c, 4 * self.held_out // len(base) + 1, i)]
        return split(crops, self.held_out)
