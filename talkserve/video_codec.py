"""How a reply's frames travel: raw RGB (same-node clients) or H.264 (everyone else).

Raw 512×512 RGB at 25 frames/s is 19.7 MB/s per stream; H.264 is what a remote backend, a k8s
Service and a browser (WebRTC) take. Each response's frames are encoded into an Annex-B elementary
stream (start codes, SPS/PPS in band before every key frame): the bytes a decoder, a muxer or an
RTP packetiser take as they are, with no container to strip (an fMP4 fragment would need its init
segment first and a demuxer on every client). One encoder per sentence: the sentence's first part
starts with an IDR frame, so a reply's parts, concatenated in order, are one decodable stream, and
a client joining at any sentence decodes from there. x264 with `tune=zerolatency` (no B-frames, no
look-ahead) returns each frame's packet as the frame goes in, so a part's bytes hold exactly its
frames: the audio beside them stays aligned frame for frame.

PyAV (FFmpeg's libx264 and h264 decoder); no Triton, no gRPC: the server and the clients share it.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from talkserve.text import decode_choice

RAW, H264 = "raw", "h264"
CODECS = (RAW, H264)


def parse_codec(raw: bytes | str | None) -> str:
    """The request's `video_codec` (absent = raw)."""
    return decode_choice(raw, "video_codec", CODECS, RAW)


class H264Encoder:
    """One sentence's frames → Annex-B H.264, part by part (the first part opens with an IDR)."""

    def __init__(self, width: int, height: int, fps: float, crf: int = 20, preset: str = "veryfast"):
        self.codec = av.CodecContext.create("libx264", "w")
        self.codec.width, self.codec.height = width - width % 2, height - height % 2  # 4:2:0 needs even sides
        self.codec.pix_fmt = "yuv420p"
        self.codec.time_base = Fraction(1, round(fps))
        self.codec.framerate = Fraction(round(fps), 1)
        # annexb: start codes in the bytes; repeat-headers: SPS/PPS before every IDR (a late joiner decodes)
        self.codec.options = {"crf": str(crf), "preset": preset, "tune": "zerolatency",
                              "x264-params": "annexb=1:repeat-headers=1:keyint=250:bframes=0"}
        self.codec.profile = "Constrained Baseline"  # what every WebRTC stack decodes (packetization-mode 1)
        self.frames = 0

    def encode(self, frames: np.ndarray) -> bytes:
        """(n, H, W, 3) uint8 RGB → their packets' bytes (n packets: zerolatency holds none back)."""
        out = bytearray()
        h, w = self.codec.height, self.codec.width
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:h, :w]), format="rgb24")
            frame.pts = self.frames
            self.frames += 1
            for packet in self.codec.encode(frame.reformat(format="yuv420p")):
                out += bytes(packet)
        return bytes(out)

    def close(self) -> bytes:
        """Whatever the encoder still holds (nothing with zerolatency; checked by the tests)."""
        return b"".join(bytes(p) for p in self.codec.encode(None))


class H264Decoder:
    """Annex-B bytes (parts in order) → RGB frames."""

    def __init__(self):
        self.codec = av.CodecContext.create("h264", "r")

    def decode(self, data: bytes) -> np.ndarray:
        frames = []
        for packet in self.codec.parse(bytes(data)):
            frames += [f.to_ndarray(format="rgb24") for f in self.codec.decode(packet)]
        # the parser holds the last frame until the next start code: flush it, the part is whole
        for packet in self.codec.parse(None):
            frames += [f.to_ndarray(format="rgb24") for f in self.codec.decode(packet)]
        return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)
