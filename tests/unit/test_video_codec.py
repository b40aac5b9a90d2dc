"""H.264 parts: what `video_codec: h264` streams, checked on real talking frames (the warp mouth on
the sample portrait and on one no build ever saw, speaking Piper speech)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import avatar_of, held_out_portrait

from talkserve.lipsync import animate_warp
from talkserve.lipsync.warp import WarpRig
from talkserve.recipe import SAMPLE_PORTRAIT, WarpConfig
from talkserve.text import RequestError
from talkserve.video_codec import H264Decoder, H264Encoder, parse_codec


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


@pytest.fixture(scope="module", params=["sample", "held-out"])
def reply(request):
    """Two sentences of a talking face as the server parts them: [[part frames, ...], ...]."""
    from talkserve.models.piper_tts import PiperTTS
    from talkserve.recipe import TTSRecipe

    avatar = avatar_of(SAMPLE_PORTRAIT, "s") if request.param == "sample" else avatar_of(held_out_portrait(), "h")
    tts = PiperTTS(*TTSRecipe().resolved_paths(), noise_scale=0.0, noise_w_scale=0.0)
    rig = WarpRig(avatar.portrait, avatar.landmarks, WarpConfig())
    sentences = []
    for text in ["Hello there, how are you doing today?", "Good morning to you."]:
        audio = tts.synthesize(text)
        sentences.append([p.frames for p in animate_warp(audio, tts.sample_rate, rig, 25.0, 6, 25)])
    return sentences


def test_the_codec_field_is_raw_by_default_and_a_bad_one_is_named():
    assert parse_codec(None) == "raw" and parse_codec(b"H264") == "h264" and parse_codec(b"") == "raw"
    with pytest.raises(RequestError) as e:
        parse_codec(b"vp9")
    assert e.value.field == "video_codec" and "'vp9' is not one of raw, h264" in str(e.value)


def test_each_part_holds_exactly_its_frames_and_decodes_at_35_db(reply):
    height, width = reply[0][0].shape[1:3]
    decoder, coded, raw, shown = H264Decoder(), 0, 0, []
    for parts in reply:
        encoder = H264Encoder(width, height, 25.0)  # one per sentence, as lipsync does
        for frames in parts:
            data = encoder.encode(frames)
            got = decoder.decode(data)
            assert got.shape == frames.shape  # nothing held back for a later part: audio stays aligned
            shown.append(psnr(got, frames))
            coded, raw = coded + len(data), raw + frames.nbytes
        assert encoder.close() == b""
    assert min(shown) >= 35.0, shown
    assert raw / coded >= 30  # the delivery issue's target; ~150× measured on these portraits


def test_a_client_joining_at_a_later_sentence_decodes_from_there(reply):
    height, width = reply[0][0].shape[1:3]
    streams = []
    for parts in reply:
        encoder = H264Encoder(width, height, 25.0)
        streams.append([encoder.encode(f) for f in parts])
    late = H264Decoder()  # never saw the first sentence
    frames = np.concatenate([late.decode(b) for b in streams[1]])
    assert len(frames) == sum(len(f) for f in reply[1])
    assert psnr(frames, np.concatenate(reply[1])) >= 35.0
