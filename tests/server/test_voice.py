"""Voice in (asr, talking_head_voice), barge-in and emotion, against the real embedded tritonserver."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from helpers import LONG_QUESTION, Collector, metric, wait_idle

from talkserve.apps.speak import concat_audio, speak
from talkserve.client import TalkClient, TalkError
from talkserve.client.media import probe
from talkserve.compress.gates import word_error_rate
from talkserve.lipsync.avatars import AvatarStore
from talkserve.models.piper_tts import PiperTTS
from talkserve.recipe import TTSRecipe
from talkserve.runtime.emotion import STYLES
from talkserve.voice.audio import write_wav

pytestmark = pytest.mark.server

SENTENCES = ["Who are you?", "Tell me a joke.", "What can you do?", "How does this work?",
             "The weather is sunny and warm today."]


@pytest.fixture(scope="module")
def voice() -> PiperTTS:
    return PiperTTS(*TTSRecipe().resolved_paths(), noise_scale=0.0, noise_w_scale=0.0)


def asr(url: str, audio: np.ndarray, sr: int, dtype: str = "FP32") -> str:
    client = grpcclient.InferenceServerClient(url)
    pcm = grpcclient.InferInput("audio", [len(audio)], dtype)
    pcm.set_data_from_numpy(audio.astype(np.float32 if dtype == "FP32" else np.float64))
    rate = grpcclient.InferInput("sample_rate", [1], "INT32")
    rate.set_data_from_numpy(np.array([sr], np.int32))
    try:
        return client.infer("asr", [pcm, rate]).as_numpy("text")[0].decode()
    finally:
        client.close()


def test_asr_hears_our_own_voice(url, voice):
    heard = [asr(url, voice.synthesize(s), voice.sample_rate) for s in SENTENCES]
    wer = word_error_rate(SENTENCES, heard)
    assert wer <= 0.10, list(zip(SENTENCES, heard, strict=True))


def with_silence(audio: np.ndarray, sr: int, before: float = 0.8, after: float = 1.2) -> np.ndarray:
    return np.concatenate([np.zeros(int(before * sr), np.float32), audio, np.zeros(int(after * sr), np.float32)])


@pytest.fixture(scope="module")
def voice_reply(url, voice, tmp_path_factory):
    """A spoken question (with silence around it, which VAD trims) answered as mp4."""
    out = tmp_path_factory.mktemp("voice") / "reply.mp4"
    question = with_silence(voice.synthesize("Who are you?"), voice.sample_rate)
    return speak(url, None, "sample", out, audio=(question, voice.sample_rate))


def test_voice_ensemble_streams_the_reply_to_what_it_heard(voice_reply):
    chunks = voice_reply.chunks
    assert len(chunks) >= 2
    assert word_error_rate(["Who are you?"], [chunks[0].user_text]) == 0.0
    assert "talking digital human" in " ".join(c.text for c in chunks if c.part == 0)
    assert [(c.index, c.part) for c in chunks] == sorted((c.index, c.part) for c in chunks)


def test_voice_reply_mp4_has_matching_video_and_audio(voice_reply):
    info = probe(voice_reply.path)
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    audio_seconds = len(concat_audio(voice_reply.chunks)) / voice_reply.chunks[0].sample_rate
    assert abs(info["frames"] - round(audio_seconds * 25)) <= 1
    assert info["frames"] == sum(len(c.video) for c in voice_reply.chunks)


def voice_error(url: str, audio: np.ndarray, sr: int) -> TalkError:
    with TalkClient(url) as client, pytest.raises(TalkError) as e:
        list(client.stream_voice(audio, sr, "sample"))
    return e.value


BAD_AUDIO = {
    "empty": (np.zeros(0, np.float32), 16000, "FP32", "audio: is empty"),
    "wrong dtype": (np.zeros(1600, np.float32), 16000, "FP64", "data-type"),
    "over the length limit": (np.full(31 * 16000, 0.01, np.float32), 16000, "FP32",
                              "audio: is 31.0 s long, the limit is 30 s"),
    "NaN samples": (np.full(1600, np.nan, np.float32), 16000, "FP32", "audio: contains NaN"),
    "unsupported sample rate": (np.zeros(1600, np.float32), 12345, "FP32", "sample_rate: 12345 Hz is not supported"),
    "silence": (np.zeros(32000, np.float32), 16000, "FP32", "audio: no speech recognised"),
}


@pytest.mark.parametrize("case", list(BAD_AUDIO))
def test_bad_audio_is_invalid_argument(url, case):
    audio, sr, dtype, expected = BAD_AUDIO[case]
    if dtype == "FP32":
        err = voice_error(url, audio, sr)
        assert err.status == "INVALID_ARGUMENT", str(err)
        assert expected in str(err)
    else:  # the client library always sends FP32; a raw request shows what other clients get
        with pytest.raises(Exception, match=expected) as e:
            asr(url, audio, sr, dtype)
        assert "INVALID_ARG" in str(e.value)
    with TalkClient(url) as client:
        assert client.is_ready()




def test_cancel_stops_the_reply_on_the_server(server, url):
    full = Collector(url, LONG_QUESTION, "reference")
    full.run()
    stream = Collector(url, LONG_QUESTION, "barge-1")
    stream.start()
    assert stream.first.wait(120) and stream.got
    with TalkClient(url) as client:
        client.cancel("barge-1")
    acked = time.monotonic()
    frames_at_ack = metric(server, "talkserve_lipsync_frames_total")
    idle_after = wait_idle(server, 2.0)
    stream.join(5)
    assert stream.ended_at is not None and stream.ended_at - acked < 2.0
    late = [c for at, c in stream.got if at > acked]
    # At most the part lipsync was already sending when the cancel landed; never a new sentence.
    assert len(late) <= 1 and all(c.index == stream.got[0][1].index for c in late)
    assert len(stream.got) < len(full.got)
    time.sleep(1.0)
    assert metric(server, "talkserve_lipsync_frames_total") - frames_at_ack <= 25  # work stopped
    print(f"cancel → idle in {idle_after:.2f}s, stream ended {stream.ended_at - acked:.2f}s after the ack, "
          f"{len(late)} part(s) after it; {len(stream.got)}/{len(full.got)} chunks streamed")


def test_new_utterance_supersedes_the_streaming_reply(server, url):
    old = Collector(url, LONG_QUESTION, "barge-2")
    old.start()
    assert old.first.wait(120) and old.got
    new = Collector(url, "Tell me a joke.", "barge-2")
    new.start()
    old.join(10)
    new.join(120)
    assert old.ended_at is not None and new.ended_at is not None
    assert old.ended_at < new.got[0][0] + 2.0  # the old reply stopped promptly
    texts = " ".join(c.text for _, c in new.got if c.part == 0)
    assert "bugs" in texts  # the new reply played in full
    assert sorted({c.index for _, c in new.got}) == list(range(1 + max(c.index for _, c in new.got)))


def test_emotion_steers_voice_and_portrait_but_leaves_the_mouth(url, built):
    recipe, _ = built
    avatar = AvatarStore(recipe.serving.avatar_db).get("sample")
    with TalkClient(url) as client:
        neutral = list(client.stream("Tell me a joke.", "sample", emotion="neutral"))
        sad = list(client.stream("Tell me a joke.", "sample", emotion="sad"))
    assert [c.text for c in sad if c.part == 0] == [c.text for c in neutral if c.part == 0]
    length = sum(len(c.audio) for c in sad) / sum(len(c.audio) for c in neutral)
    assert 1.04 < length < 1.4  # sad speaks slower (VITS length_scale × 1.25; ~1.09 measured)
    x1, y1, _, _ = avatar.box
    assert x1 > 20 and y1 > 20  # the corner below is background, outside the face box
    tint = np.asarray(STYLES["sad"].tint)
    corner = avatar.portrait[:20, :20].astype(np.float32)
    assert np.abs(sad[0].video[0, :20, :20] - np.clip(corner * tint, 0, 255).round()).max() <= 1
    assert (neutral[0].video[0, :20, :20] == avatar.portrait[:20, :20]).all()


def test_unknown_emotion_is_invalid_argument(url):
    with TalkClient(url) as client, pytest.raises(TalkError, match="emotion: 'bored' is not one of") as e:
        list(client.stream("Hi.", "sample", emotion="bored"))
    assert e.value.status == "INVALID_ARGUMENT"


def test_cli_say_audio_and_converse_with_barge_in(url, voice, tmp_path):
    sr = voice.sample_rate
    question = tmp_path / "q.wav"
    write_wav(question, with_silence(voice.synthesize("What can you do?"), sr), sr)
    out = tmp_path / "say.mp4"
    run = subprocess.run([sys.executable, "-m", "talkserve.cli", "say", "--audio", str(question), "-o", str(out),
                          "--url", url], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "heard: What can you do?" in run.stdout and probe(out)["frames"] > 25

    # Two turns: the second starts 3 s after the first ends, while the first reply (three long
    # sentences) still streams.
    talk = np.concatenate([with_silence(voice.synthesize("How does this work?"), sr, 0.3, 3.0),
                           voice.synthesize("What can you do?"), np.zeros(sr, np.float32)])
    write_wav(tmp_path / "talk.wav", talk, sr)
    run = subprocess.run([sys.executable, "-m", "talkserve.cli", "converse", str(tmp_path / "talk.wav"),
                          "--out-dir", str(tmp_path / "replies"), "--url", url],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 2, run.stdout
    assert "interrupted (barge-in)" in lines[0] and "How does this work?" in lines[0]
    assert "done" in lines[1] and "What can you do?" in lines[1]
    assert probe(tmp_path / "replies" / "reply-2.mp4")["frames"] > 25
