"""A reply's audio and H.264 video on one clock, as WebRTC tracks (aiortc) that pace them in real time.

The reply thread adds each streamed part; the audio track sends 20 ms of it at a time on the wall
clock (silence between replies: the browser's audio clock never stops), and each video frame is due
when the audio it shows starts to play: part audio queued behind what is still unplayed, frame i
of the part i / fps after that. Both tracks belong to one MediaStream, so the browser aligns them
further by their RTP timestamps and RTCP sender reports.

The video is forwarded as the server encoded it (one av.Packet per frame, split from the Annex-B
part by FFmpeg's H.264 parser; aiortc packetises it without re-encoding) when the browser took
H.264; otherwise it is decoded here and aiortc encodes it to the codec that was negotiated.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from fractions import Fraction

import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

RATE = 48_000  # WebRTC's Opus clock
AUDIO_FRAME = 960  # 20 ms
VIDEO_CLOCK = 90_000
TICK_S = AUDIO_FRAME / RATE / 2  # queued into silence, audio starts at the audio track's next tick: on average


class Playout:
    def __init__(self, fps: float = 25.0):
        self.fps = fps
        self.lock = threading.Lock()
        self.audio: deque[np.ndarray] = deque()  # int16 mono at RATE
        self.video: deque[tuple[float, av.Packet]] = deque()  # (due, monotonic s; the frame's packet)
        self.queued = 0  # audio samples not yet sent
        self.parser = av.CodecContext.create("h264", "r")

    def add(self, audio: np.ndarray, sample_rate: int, h264: bytes) -> None:
        """One part: its audio (float32 at `sample_rate`) and its frames' H.264."""
        pcm = _resample(audio, sample_rate)
        packets = [p for p in self.parser.parse(h264)] + [p for p in self.parser.parse(None)]
        with self.lock:
            # after the audio still queued; into silence, at the audio track's next 20 ms tick
            start = time.monotonic() + (self.queued / RATE if self.queued else TICK_S)
            for i, packet in enumerate(packets):
                self.video.append((start + i / self.fps, packet))
            self.audio.append(pcm)
            self.queued += len(pcm)

    def flush(self) -> None:
        """Drop what is not yet played (a reply cut by a new question)."""
        with self.lock:
            self.audio.clear()
            self.video.clear()
            self.queued = 0

    def next_audio(self) -> np.ndarray:
        out = np.zeros(AUDIO_FRAME, np.int16)
        with self.lock:
            filled = 0
            while filled < AUDIO_FRAME and self.audio:
                head = self.audio[0]
                n = min(AUDIO_FRAME - filled, len(head))
                out[filled:filled + n] = head[:n]
                filled += n
                if n == len(head):
                    self.audio.popleft()
                else:
                    self.audio[0] = head[n:]
            self.queued -= filled
        return out

    def next_video(self) -> tuple[float, av.Packet] | None:
        with self.lock:
            return self.video.popleft() if self.video else None


def _resample(audio: np.ndarray, rate: int) -> np.ndarray:
    """float32 mono at `rate` → int16 at RATE (polyphase, as exact as the rates' ratio allows)."""
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate, RATE)
    x = resample_poly(np.asarray(audio, np.float32), RATE // g, rate // g) if rate != RATE else audio
    return (np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)


class _Paced(MediaStreamTrack):
    def __init__(self, playout: Playout):
        super().__init__()
        self.playout = playout
        self.t0: float | None = None

    def _clock(self) -> float:
        if self.t0 is None:
            self.t0 = time.monotonic()
        return self.t0


class ReplyAudio(_Paced):
    kind = "audio"

    def __init__(self, playout: Playout):
        super().__init__(playout)
        self.samples = 0

    async def recv(self) -> av.AudioFrame:
        due = self._clock() + self.samples / RATE
        if (wait := due - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        frame = av.AudioFrame.from_ndarray(self.playout.next_audio().reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self.samples, Fraction(1, RATE)
        self.samples += AUDIO_FRAME
        return frame


class ReplyVideo(_Paced):
    kind = "video"

    def __init__(self, playout: Playout):
        super().__init__(playout)
        self.set_passthrough(True)
        self.sent = 0

    def set_passthrough(self, passthrough: bool) -> None:
        """False: the browser took no H.264; frames are decoded here and aiortc encodes its codec."""
        self.passthrough = passthrough
        self.decoder = None if passthrough else av.CodecContext.create("h264", "r")

    async def recv(self):
        start = self._clock()
        while (item := self.playout.next_video()) is None:
            await asyncio.sleep(0.005)
        due, packet = item
        if (wait := due - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        pts = max(int((max(due, start) - start) * VIDEO_CLOCK), self.sent)
        self.sent = pts + 1  # strictly increasing, also for a frame that came late
        if self.passthrough:
            packet.pts, packet.time_base = pts, Fraction(1, VIDEO_CLOCK)
            return packet
        frames = self.decoder.decode(packet)
        if not frames:  # a zerolatency stream holds nothing back; should it, take the next packet
            return await self.recv()
        frame = frames[-1]
        frame.pts, frame.time_base = pts, Fraction(1, VIDEO_CLOCK)
        return frame
