"""The client's playback clock, seen from either end of a stream.

A player starts at the first chunk and plays each chunk's audio after the one before; it *stalls*
when the next chunk arrives after everything it had has played out, and resumes when it lands.
`stalls` counts them for a benchmark's client; `Playback` is the server's estimate of the same
clock for one stream (`lipsync` degrades a reply to the cheaper mouth when a stall is coming).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, Field

FRAME = 0.04  # one video frame at 25 fps: a later arrival than this is a visible freeze
DEGRADED_SENTENCES = "talkserve_lipsync_degraded_sentences_total"  # lipsync's counter of the switches


def stall_points(chunks: Iterable[tuple[float, float]], tolerance: float = FRAME) -> list[tuple[int, float]]:
    """(arrival time, seconds of audio) per chunk, in stream order → (position of the late chunk,
    seconds the player waited for it) per stall."""
    points, dry = [], None  # dry: when the player runs out of what it has
    for i, (at, seconds) in enumerate(chunks):
        if dry is None:
            dry = at
        elif at > dry + tolerance:
            points.append((i, at - dry))
            dry = at
        else:
            dry = max(dry, at)  # an early chunk waits in the buffer
        dry += seconds
    return points


def stalls(chunks: Iterable[tuple[float, float]], tolerance: float = FRAME) -> tuple[int, float]:
    """(arrival time, seconds of audio) per chunk, in stream order → (stalls, seconds stalled)."""
    points = stall_points(chunks, tolerance)
    return len(points), sum(waited for _, waited in points)


@dataclass
class Playback:
    """One stream's clock as the server sends it: when its first chunk left, and how much audio has
    left since (the client can have played no more than that)."""

    first_at: float | None = None
    sent_s: float = 0.0

    def sent(self, seconds: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.first_at is None:
            self.first_at = now
        self.sent_s += seconds

    def dumps(self) -> str:
        """As text for another process (`time.monotonic` is one clock for the whole machine)."""
        return f"{self.first_at!r} {self.sent_s!r}"

    @classmethod
    def loads(cls, text: str) -> Playback:
        first_at, sent_s = text.split()
        return cls(None if first_at == "None" else float(first_at), float(sent_s))

    def buffered(self, now: float | None = None) -> float:
        """Seconds of audio the client still has to play (≤ 0: it is stalled); inf before the first chunk."""
        if self.first_at is None:
            return float("inf")
        return self.first_at + self.sent_s - (time.monotonic() if now is None else now)


class DegradeConfig(BaseModel):
    """When an admitted reply is about to stall, draw its next sentence with the procedural mouth."""

    enabled: bool = Field(True, description="Degrade to the warp mouth instead of stalling (kind wav2lip only)")
    margin_s: float = Field(
        0.2, ge=0, description="Audio (s) a client must still have when the next part reaches it; parts are "
                               "sized to keep it, and a part that cannot be goes to the warp mouth (0.08 left "
                               "2 short stalls at 2 streams once sentences ran side by side: scheduling jitter)")


def would_stall(clock: Playback, frames: int, fps: float | None, margin_s: float, now: float | None = None) -> bool:
    """Whether the client runs under `margin_s` of audio before `frames` frames drawn at `fps` reach
    it (a part's own audio helps only once it has arrived)."""
    if fps is None or clock.first_at is None:  # nothing measured yet, or the reply's first part
        return False
    return clock.buffered(now) - frames / fps < margin_s


def falls_behind_at_start(first_frames: int, video_fps: float, fps: float | None, margin_s: float) -> bool:
    """Whether a reply started on Wav2Lip would have to leave it at its second part anyway: a client
    holding only the first part's audio (`first_frames` of video) falls under `margin_s` before even
    one more frame drawn at `fps` reaches it. Then the first part is only latency spent on Wav2Lip."""
    if fps is None:  # nothing measured yet
        return False
    return first_frames / video_fps - 1 / fps < margin_s


def affordable_frames(clock: Playback, fps: float | None, margin_s: float, now: float | None = None) -> int | None:
    """The most frames that can be drawn at `fps` before the client falls under `margin_s` (None:
    not known yet, any size will do)."""
    if fps is None or clock.first_at is None:
        return None
    return int((clock.buffered(now) - margin_s) * fps)
