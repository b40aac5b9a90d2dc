"""What a reply streams: one response of the talking-head ensembles, as the client hands it on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Chunk:
    """One streamed response: part `part` of sentence `index` of the reply."""

    index: int
    part: int
    text: str
    audio: np.ndarray  # (samples,) float32
    sample_rate: int
    video: np.ndarray  # (frames, H, W, 3) uint8 RGB (with video_codec h264: decoded, unless decode_video=False)
    seconds: float  # since the request was sent
    user_text: str | None = None  # talking_head_voice: what the server recognised
    h264: bytes = b""  # video_codec h264: this part's frames as Annex-B H.264 (a reply's parts form one stream)
