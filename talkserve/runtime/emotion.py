"""Emotion/style: one optional request field steering the prompt, the voice and the portrait.

Each style is a handful of cheap, documented knobs, not a trained emotion model:
- LLM: a system message ("Reply in a happy, upbeat tone.") when the model's chat template has a
  system role; templates without one (the starter) get the prompt unchanged.
- Piper VITS: multipliers on length_scale (speaking rate) and noise_scale / noise_w_scale
  (livelier or flatter delivery).
- FastSpeech2: pitch and energy on the predicted mel: energy as a log-gain, pitch as a shift of
  the mel bins (moves pitch and formants together: cheap, audible, not a vocoder-grade shift).
- Portrait: a colour grade of the frame outside the mouth box (warmer for happy, cooler and
  darker for sad, redder for angry, brighter for surprised); the mouth Wav2Lip drew is untouched.
`neutral` changes nothing anywhere: its requests are byte-identical to requests without emotion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talkserve.text import decode_choice

NEUTRAL = "neutral"


@dataclass(frozen=True)
class Style:
    prompt: str = ""  # system message; empty = none
    length_scale: float = 1.0  # × VITS length_scale (>1 slower)
    noise_scale: float = 1.0  # × VITS noise_scale
    noise_w_scale: float = 1.0  # × VITS noise_w_scale
    pitch_bins: int = 0  # FastSpeech2: mel bins to shift up (+) or down (−)
    energy_db: float = 0.0  # FastSpeech2: gain on the mel
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGB gains outside the mouth box


STYLES: dict[str, Style] = {
    NEUTRAL: Style(),
    "happy": Style("Reply in a happy, upbeat tone.", 0.9, 1.15, 1.1, 2, 2.0, (1.08, 1.03, 0.94)),
    "sad": Style("Reply in a sad, subdued tone.", 1.25, 0.8, 0.7, -2, -4.0, (0.88, 0.9, 1.0)),
    "angry": Style("Reply in an angry, curt tone.", 0.95, 1.25, 1.2, 1, 4.0, (1.12, 0.9, 0.88)),
    "surprised": Style("Reply in a surprised, astonished tone.", 0.9, 1.2, 1.3, 3, 3.0, (1.1, 1.1, 1.1)),
}


def parse_emotion(raw: bytes | str | None) -> str:
    """Request bytes (or None when the optional input is absent) → a known emotion name."""
    return decode_choice(raw, "emotion", STYLES, NEUTRAL)


def style(name: str) -> Style:
    return STYLES[name]


def shift_mel(mel: np.ndarray, s: Style) -> np.ndarray:
    """(B, 80, T) natural-log mel → the same with the style's pitch shift and energy gain."""
    out = mel + s.energy_db / 20 * np.log(10)  # dB → natural log of amplitude
    k = s.pitch_bins
    if k > 0:
        out = np.concatenate([np.repeat(out[:, :1], k, axis=1), out[:, :-k]], axis=1)
    elif k < 0:
        out = np.concatenate([out[:, -k:], np.repeat(out[:, -1:], -k, axis=1)], axis=1)
    return out.astype(mel.dtype)


def grade_frames(frames: np.ndarray, box: tuple[int, int, int, int], s: Style) -> np.ndarray:
    """(n, H, W, 3) uint8 RGB → colour-graded outside the mouth (the lower half of the face box)."""
    if s.tint == (1.0, 1.0, 1.0):
        return frames
    x1, y1, x2, y2 = box
    mouth_top = (y1 + y2) // 2
    graded = np.clip(frames.astype(np.float32) * np.asarray(s.tint, np.float32), 0, 255).round().astype(np.uint8)
    graded[:, mouth_top:y2, x1:x2] = frames[:, mouth_top:y2, x1:x2]
    return graded
