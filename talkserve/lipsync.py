"""Pure lip-sync functions: audio chunk → Wav2Lip inputs → frames pasted into the portrait.

Served by the `lipsync` python model; imported by tests without Triton.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from talkserve.audio import frame_count, mel_windows, wav2lip_mel
from talkserve.avatars import Avatar
from talkserve.models.layout import FACE_SIZE, MEL_STEP

# (mel (B,1,80,16), face (B,6,96,96)) -> (B,3,96,96) in [0, 1]
Generator = Callable[[np.ndarray, np.ndarray], np.ndarray]


def face_input(face_rgb: np.ndarray, n: int) -> np.ndarray:
    """(n, 6, 96, 96) float32: lower-half-masked face ++ reference face, BGR in [0, 1] as trained."""
    bgr = face_rgb[..., ::-1].astype(np.float32) / 255.0
    masked = bgr.copy()
    masked[FACE_SIZE // 2 :] = 0.0  # Wav2Lip hides the mouth half and redraws it from audio
    pair = np.concatenate([masked, bgr], axis=2).transpose(2, 0, 1)  # (6, 96, 96)
    return np.broadcast_to(pair, (n, *pair.shape)).copy()


def paste_back(avatar: Avatar, faces_bgr01: np.ndarray) -> np.ndarray:
    """(n, 3, 96, 96) generator output → (n, H, W, 3) uint8 RGB portraits with the face replaced.

    Only the face box changes; every pixel outside it is the stored portrait, byte for byte.
    """
    x1, y1, x2, y2 = avatar.box
    frames = np.broadcast_to(avatar.portrait, (len(faces_bgr01), *avatar.portrait.shape)).copy()
    for i, face in enumerate(faces_bgr01):
        rgb = (np.clip(face.transpose(1, 2, 0)[..., ::-1], 0.0, 1.0) * 255.0).round().astype(np.uint8)
        frames[i, y1:y2, x1:x2] = cv2.resize(rgb, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    return frames


def part_sizes(n_frames: int, first: int, rest: int) -> list[int]:
    """Frames per streamed part: a small first part (fast first chunk), then larger ones."""
    sizes, left = [], n_frames
    while left > 0:
        size = min(left, first if not sizes else rest)
        sizes.append(size)
        left -= size
    return sizes


@dataclass
class Part:
    index: int
    frames: np.ndarray  # (n, H, W, 3) uint8 RGB
    audio: np.ndarray  # exactly the samples these frames show


def animate(audio: np.ndarray, sr: int, avatar: Avatar, generator: Generator, fps: float = 25.0,
            first_part: int = 6, part: int = 25) -> Iterator[Part]:
    """Audio of one sentence → its frames in parts, each with the audio it covers.

    The mel is computed over the whole sentence (windows near part edges see real context);
    each part's audio slice is the frames' exact span, so audio and lips cannot drift apart.
    """
    n = frame_count(len(audio), sr, fps)
    mels = mel_windows(wav2lip_mel(audio, sr), n, fps, MEL_STEP)
    face = face_input(avatar.face, 1)
    sizes = part_sizes(n, first_part, part)
    start = 0
    for i, size in enumerate(sizes):
        frames = paste_back(avatar, generator(mels[start : start + size], np.repeat(face, size, axis=0)))
        end = start + size
        # The last part takes any sub-frame remainder so the parts' audio sums to the input.
        a, b = round(start * sr / fps), (round(end * sr / fps) if i < len(sizes) - 1 else len(audio))
        yield Part(i, frames, audio[a:b])
        start = end
