"""MP4 (H.264 video + AAC audio) written with PyAV as chunks arrive.

The file is written under a temporary name and renamed on close, so an interrupted reply never
leaves a truncated mp4 at the target path.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AAC_FRAME = 1024  # samples per AAC frame


class Mp4Writer:
    def __init__(self, path: str | Path, fps: int = 25, crf: int = 20):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.part")
        self.fps, self.crf = fps, crf
        self.container = None
        self.video = self.audio = None
        self.pending = np.zeros(0, np.float32)
        self.samples_written = 0
        self.frames_written = 0

    def _open(self, height: int, width: int, sample_rate: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.tmp), mode="w", format="mp4")
        self.video = self.container.add_stream("libx264", rate=self.fps)
        self.video.width, self.video.height = width - width % 2, height - height % 2
        self.video.pix_fmt = "yuv420p"
        self.video.options = {"crf": str(self.crf), "preset": "veryfast"}
        self.audio = self.container.add_stream("aac", rate=sample_rate)
        self.audio.layout = "mono"
        self.sample_rate = sample_rate

    def add(self, frames: np.ndarray, audio: np.ndarray, sample_rate: int) -> None:
        """frames (n, H, W, 3) uint8 RGB; audio mono float32 in [-1, 1] for the same span."""
        if self.container is None:
            self._open(frames.shape[1], frames.shape[2], sample_rate)
        elif sample_rate != self.sample_rate:
            raise ValueError(f"sample rate changed mid-stream: {self.sample_rate} → {sample_rate}")
        h, w = self.video.height, self.video.width
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:h, :w]), format="rgb24")
            frame.pts = self.frames_written
            frame.time_base = Fraction(1, self.fps)
            self.container.mux(self.video.encode(frame))
            self.frames_written += 1
        self.pending = np.concatenate([self.pending, np.asarray(audio, np.float32)])
        self._flush_audio(final=False)

    def _flush_audio(self, final: bool) -> None:
        while len(self.pending) >= AAC_FRAME or (final and len(self.pending)):
            block, self.pending = self.pending[:AAC_FRAME], self.pending[AAC_FRAME:]
            block = np.pad(block, (0, AAC_FRAME - len(block)))
            frame = av.AudioFrame.from_ndarray(block[None, :], format="flt", layout="mono")
            frame.sample_rate = self.sample_rate
            frame.pts = self.samples_written
            frame.time_base = Fraction(1, self.sample_rate)
            self.container.mux(self.audio.encode(frame))
            self.samples_written += AAC_FRAME

    def close(self) -> Path:
        if self.container is None:
            raise ValueError("nothing was streamed; no mp4 written")
        self._flush_audio(final=True)
        self.container.mux(self.video.encode(None))
        self.container.mux(self.audio.encode(None))
        self.container.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self.container is not None:
            self.container.close()
        self.tmp.unlink(missing_ok=True)


def probe(path: str | Path) -> dict:
    """Decode an mp4 fully: frame count, fps, audio seconds, size (what the tests check)."""
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        info = {"fps": float(v.average_rate), "width": v.width, "height": v.height,
                "video_codec": v.codec_context.name, "audio_codec": a.codec_context.name, "sample_rate": a.rate}
        info["frames"] = sum(1 for _ in c.decode(v))
    with av.open(str(path)) as c:
        samples = sum(f.samples for f in c.decode(c.streams.audio[0]))
    return {**info, "audio_seconds": samples / info["sample_rate"]}


def frame_strip(frames: np.ndarray, face_box, mouth_box, path: str | Path, count: int = 8, fps: int = 25,
                tile: int = 160) -> Path:
    """PNG of `count` frames spread over `frames` (n, H, W, 3): each the face, with its mouth
    enlarged below it and the frame's time, so lip movement can be seen without playing the mp4."""
    import cv2

    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    fx1, fy1, fx2, fy2 = face_box
    mx1, my1, mx2, my2 = mouth_box
    tiles = []
    for i in picks:
        face = cv2.resize(frames[i][fy1:fy2, fx1:fx2], (tile, tile), interpolation=cv2.INTER_AREA)
        mouth = frames[i][my1:my2, mx1:mx2]
        mouth = cv2.resize(mouth, (tile, max(1, round(tile * mouth.shape[0] / max(1, mouth.shape[1])))),
                           interpolation=cv2.INTER_CUBIC)
        col = np.concatenate([face, mouth, np.full((22, tile, 3), 255, np.uint8)])
        cv2.putText(col, f"{i / fps:.2f}s", (6, col.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
        tiles.append(np.pad(col, ((0, 0), (0, 4), (0, 0)), constant_values=255))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part.png")
    cv2.imwrite(str(tmp), cv2.cvtColor(np.concatenate(tiles, axis=1), cv2.COLOR_RGB2BGR))
    os.replace(tmp, path)
    return path
