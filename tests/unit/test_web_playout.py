"""The browser gateway's clock: a part's frames are due when its audio starts to play."""

from __future__ import annotations

import time

import numpy as np

from talkserve.apps.web import negotiated_h264
from talkserve.apps.web.playout import AUDIO_FRAME, RATE, Playout
from talkserve.video_codec import H264Encoder


def part(frames: int, seconds: float, rate: int = 22050) -> tuple[np.ndarray, int, bytes]:
    rng = np.random.default_rng(frames)
    video = rng.integers(0, 255, (frames, 64, 64, 3), dtype=np.uint8)
    return (rng.uniform(-0.5, 0.5, int(seconds * rate)).astype(np.float32), rate,
            H264Encoder(64, 64, 25.0).encode(video))


def test_a_part_queues_one_packet_per_frame_due_when_its_audio_plays():
    playout, first, second = Playout(), part(6, 0.24), part(25, 1.0)
    before = time.monotonic()
    playout.add(*first)  # into silence: its audio goes out at the audio track's next 20 ms tick
    between = time.monotonic()
    playout.add(*second)  # behind the first part's audio, none of it played yet
    after = time.monotonic()
    due = [playout.next_video()[0] for _ in range(31)]
    assert playout.next_video() is None  # one packet per frame, nothing more
    assert np.allclose(np.diff(due[:6]), 0.04, atol=1e-6) and np.allclose(np.diff(due[6:]), 0.04, atol=1e-6)
    assert before + 0.01 <= due[0] <= between + 0.01
    assert between + 0.24 <= due[6] <= after + 0.24  # where the first part's audio ends
    assert playout.queued == round(0.24 * RATE) + RATE


def test_audio_is_sent_in_20_ms_frames_then_silence_and_a_flush_drops_the_rest():
    playout = Playout()
    playout.add(*part(1, 0.03, RATE))
    first, second = playout.next_audio(), playout.next_audio()
    assert len(first) == AUDIO_FRAME and first.any() and second[: int(0.01 * RATE)].any()
    assert not playout.next_audio().any()  # nothing queued: silence
    playout.add(*part(25, 1.0))
    playout.flush()
    assert playout.next_video() is None and not playout.next_audio().any() and playout.queued == 0


def test_the_answer_says_whether_the_video_goes_out_as_h264():
    head = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
    h264 = head + "m=video 9 UDP/TLS/RTP/SAVPF 99 97\r\na=rtpmap:99 H264/90000\r\na=rtpmap:97 VP8/90000\r\n"
    vp8 = head + "m=video 9 UDP/TLS/RTP/SAVPF 97 99\r\na=rtpmap:99 H264/90000\r\na=rtpmap:97 VP8/90000\r\n"
    assert negotiated_h264(h264) and not negotiated_h264(vp8) and not negotiated_h264(head)
