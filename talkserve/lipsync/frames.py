"""Pure lip-sync functions: audio of a sentence → mouth frames → pasted into the portrait, in parts.

Served by the `lipsync` python model; imported by tests without Triton. Two kinds draw the mouth:
Wav2Lip (a generator over mel windows and the face crop, called through `Generator`) and the
procedural `warp` rig (`talkserve.lipsync.warp`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from talkserve.lipsync.avatars import Avatar
from talkserve.spec import FACE_SIZE, MEL_STEP
from talkserve.voice.audio import frame_count, mel_windows, wav2lip_mel

# (mel (B,1,80,16), face (B,6,96,96)) -> (B,3,96,96) in [0, 1]
Generator = Callable[[np.ndarray, np.ndarray], np.ndarray]
# (first frame, end frame) of a sentence -> (n, H, W, 3) uint8 RGB frames
Renderer = Callable[[int, int], np.ndarray]
LOWER_FACE = [*range(2, 15), 35, 34, 33, 32, 31]  # jaw and the base of the nose: what a mouth moves


def crop_face(frame: np.ndarray, box) -> np.ndarray:
    """(96, 96, 3) crop of `box` (x1, y1, x2, y2) from a frame, as Avatar.face is cut."""
    x1, y1, x2, y2 = box
    return cv2.resize(frame[y1:y2, x1:x2], (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)


def faces_rgb(out_bgr01: np.ndarray) -> np.ndarray:
    """(n, 3, 96, 96) generator output (BGR in [0, 1]) → (n, 96, 96, 3) uint8 RGB."""
    return (np.clip(out_bgr01.transpose(0, 2, 3, 1)[..., ::-1], 0, 1) * 255).round().astype(np.uint8)


def face_input(face_rgb: np.ndarray, n: int) -> np.ndarray:
    """(n, 6, 96, 96) float32: lower-half-masked face ++ reference face, BGR in [0, 1] as trained."""
    bgr = face_rgb[..., ::-1].astype(np.float32) / 255.0
    masked = bgr.copy()
    masked[FACE_SIZE // 2 :] = 0.0  # Wav2Lip hides the mouth half and redraws it from audio
    pair = np.concatenate([masked, bgr], axis=2).transpose(2, 0, 1)  # (6, 96, 96)
    return np.broadcast_to(pair, (n, *pair.shape)).copy()


def mouth_in_crop(avatar: Avatar, open_room: float = 0.3) -> tuple[int, int, int, int]:
    """The region a mouth movement may change (landmarks.mouth_box), in 96×96 crop pixels."""
    from talkserve.lipsync.landmarks import mouth_box

    mx1, my1, mx2, my2 = mouth_box(avatar.landmarks, avatar.portrait.shape, open_room)
    x1, y1, x2, y2 = avatar.box
    sx, sy = FACE_SIZE / (x2 - x1), FACE_SIZE / (y2 - y1)
    clip = lambda v: int(np.clip(v, 0, FACE_SIZE))  # noqa: E731
    return clip((mx1 - x1) * sx), clip((my1 - y1) * sy), clip(np.ceil((mx2 - x1) * sx)), clip(np.ceil((my2 - y1) * sy))


def identity_pixels(avatar: Avatar) -> np.ndarray:
    """(96, 96) bool: the face crop outside the mouth region, where output should equal the photo."""
    keep = np.ones((FACE_SIZE, FACE_SIZE), bool)
    x1, y1, x2, y2 = mouth_in_crop(avatar)
    keep[y1:y2, x1:x2] = False
    return keep


def match_colour(faces: np.ndarray, reference: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(n, 3, 96, 96) generated faces with each channel's mean and spread matched to the reference
    face (3, 96, 96) over the `keep` pixels (outside the mouth, where both show the same skin).
    A generator drifts in colour on faces unlike its training set; the photo says what is right."""
    x = faces[:, :, keep]  # (n, 3, K)
    y = reference[:, keep][None]  # (1, 3, K)
    gain = np.clip(y.std(-1, keepdims=True) / np.maximum(x.std(-1, keepdims=True), 1e-4), 0.5, 2.0)
    offset = y.mean(-1, keepdims=True) - gain * x.mean(-1, keepdims=True)
    return np.clip(faces * gain[..., None] + offset[..., None], 0.0, 1.0).astype(np.float32)


def paste_mask(avatar: Avatar) -> np.ndarray:
    """(h, w, 1) float32 blend weights over the face box: 1 on the lower face (jaw to the base of
    the nose, from the landmarks), feathered to 0 before the eyes and the box's edges, so eyes and
    forehead keep the photo's own pixels and no box seam shows."""
    x1, y1, x2, y2 = avatar.box
    h, w = y2 - y1, x2 - x1
    pts = avatar.landmarks[LOWER_FACE] - (x1, y1)
    feather = max(2.0, 0.05 * w)
    centre = pts.mean(0)
    pts = centre + (pts - centre) * 1.08  # a little past the jaw line: the blur then lands outside it
    mask = np.zeros((h, w), np.float32)
    cv2.fillPoly(mask, [np.round(cv2.convexHull(pts.astype(np.float32))).astype(np.int32)], 1.0, cv2.LINE_AA)
    mask = cv2.GaussianBlur(mask, (0, 0), feather)
    mask = np.clip((mask - 0.02) / 0.96, 0.0, 1.0)  # cut the Gaussian's tails: beyond them, the photo exactly
    edge_y = np.minimum(np.arange(h), np.arange(h)[::-1])
    edge_x = np.minimum(np.arange(w), np.arange(w)[::-1])
    edge = np.clip(np.minimum(edge_y[:, None], edge_x[None, :]) / (2 * feather), 0, 1)
    return (mask * edge)[..., None]


def paste_back(avatar: Avatar, faces_bgr01: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """(n, 3, 96, 96) generator output → (n, H, W, 3) uint8 RGB portraits with the lower face blended in.

    Every pixel outside the face box, and inside it wherever the mask is 0, is the stored portrait.
    """
    x1, y1, x2, y2 = avatar.box
    mask = paste_mask(avatar) if mask is None else mask
    frames = np.broadcast_to(avatar.portrait, (len(faces_bgr01), *avatar.portrait.shape)).copy()
    base = avatar.portrait[y1:y2, x1:x2].astype(np.float32)
    for i, face in enumerate(faces_bgr01):
        rgb = np.clip(face.transpose(1, 2, 0)[..., ::-1], 0.0, 1.0) * 255.0
        big = cv2.resize(rgb, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
        frames[i, y1:y2, x1:x2] = np.round(base + (big - base) * mask).astype(np.uint8)
    return frames


def frames_within(frames: int, frame_bytes: int, max_bytes: float) -> int:
    """`frames`, or fewer so that a part of them holds at most `max_bytes` of raw frames (at least one):
    a part's bytes, not its frame count, are what a reader that stops reading leaves in the server."""
    return max(1, min(frames, int(max_bytes // max(frame_bytes, 1))))


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


def stream_parts(audio: np.ndarray, sr: int, render: Renderer, fps: float = 25.0, first_part: int = 6,
                 part: int = 25, budget: Callable[[], int | None] | None = None) -> Iterator[Part]:
    """A sentence's frames in parts, each with exactly the audio it covers (audio and lips cannot
    drift apart); the last part takes any sub-frame remainder so the parts' audio sums to the input.
    `budget()`, asked before each later part, caps its frames (what can be drawn before the client
    runs dry; None = no cap; at least one frame)."""
    n = frame_count(len(audio), sr, fps)
    start, i = 0, 0
    while start < n:
        size = first_part if i == 0 else part
        cap = budget() if budget is not None and i > 0 else None
        end = min(n, start + (size if cap is None else max(1, min(size, cap))))
        frames = render(start, end)
        a, b = round(start * sr / fps), (round(end * sr / fps) if end < n else len(audio))
        yield Part(i, frames, audio[a:b])
        start, i = end, i + 1


def animate(audio: np.ndarray, sr: int, avatar: Avatar, generator: Generator, fps: float = 25.0,
            first_part: int = 6, part: int = 25) -> Iterator[Part]:
    """Wav2Lip: the mel over the whole sentence (windows near part edges see real context), the
    generator per part, its colour matched to the photo, the feathered paste-back."""
    return stream_parts(audio, sr, _wav2lip_renderer(audio, sr, avatar, generator, fps), fps, first_part, part)


def _wav2lip_renderer(audio: np.ndarray, sr: int, avatar: Avatar, generator: Generator, fps: float) -> Renderer:
    n = frame_count(len(audio), sr, fps)
    mels = mel_windows(wav2lip_mel(audio, sr), n, fps, MEL_STEP)
    face = face_input(avatar.face, 1)
    mask, keep = paste_mask(avatar), identity_pixels(avatar)

    def render(start: int, end: int) -> np.ndarray:
        out = generator(mels[start:end], np.repeat(face, end - start, axis=0))
        return paste_back(avatar, match_colour(out, face[0, 3:], keep), mask)

    return render


def animate_warp(audio: np.ndarray, sr: int, rig, fps: float = 25.0, first_part: int = 6,
                 part: int = 25) -> Iterator[Part]:
    """The procedural mouth: one shape per frame from the sentence's audio, rendered by `rig`."""
    from talkserve.lipsync.warp import mouth_shapes

    shapes = mouth_shapes(audio, sr, fps, frame_count(len(audio), sr, fps), rig.cfg)
    return stream_parts(audio, sr, lambda s, e: rig.animate(shapes[s:e]), fps, first_part, part)


def animate_degrading(audio: np.ndarray, sr: int, avatar: Avatar, generator: Generator, rig,
                      use_warp: Callable[[int], bool], fps: float = 25.0, first_part: int = 6,
                      part: int = 25, budget: Callable[[], int | None] | None = None) -> Iterator[Part]:
    """Wav2Lip part by part — each no bigger than `budget()` — until `use_warp(frames)` says drawing
    the next part would stall the client; from then on the rest of the sentence is the procedural
    mouth (`rig`), which draws at once, in full-size parts."""
    from talkserve.lipsync.warp import mouth_shapes

    wav2lip = _wav2lip_renderer(audio, sr, avatar, generator, fps)
    shapes = mouth_shapes(audio, sr, fps, frame_count(len(audio), sr, fps), rig.cfg)
    warped = False

    def render(start: int, end: int) -> np.ndarray:
        nonlocal warped
        warped = warped or use_warp(end - start)
        return rig.animate(shapes[start:end]) if warped else wav2lip(start, end)

    def cap() -> int | None:
        return None if warped or budget is None else budget()

    return stream_parts(audio, sr, render, fps, first_part, part, cap)
