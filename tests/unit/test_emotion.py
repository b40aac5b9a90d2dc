"""Pure pieces of voice in, barge-in and emotion (no server)."""

from __future__ import annotations

import numpy as np
import pytest

from talkserve.runtime.emotion import STYLES, grade_frames, parse_emotion, shift_mel
from talkserve.runtime.turns import Turns
from talkserve.text import RequestError
from talkserve.voice.asr import check_audio
from talkserve.voice.audio import read_wav, write_wav


def test_parse_emotion_defaults_and_rejects():
    assert parse_emotion(None) == "neutral" and parse_emotion(b" Happy ") == "happy"
    with pytest.raises(RequestError, match="emotion: 'bored' is not one of neutral, happy"):
        parse_emotion(b"bored")


def test_grade_leaves_the_mouth_and_neutral_alone():
    frames = np.full((2, 100, 100, 3), 100, np.uint8)
    box = (20, 20, 80, 80)
    assert grade_frames(frames, box, STYLES["neutral"]) is frames
    happy = grade_frames(frames, box, STYLES["happy"])
    assert (happy[:, 50:80, 20:80] == 100).all()  # the mouth half of the face box is Wav2Lip's
    assert (happy[:, :20, :, 0] == 108).all() and (happy[:, 20:50, 20:80, 2] == 94).all()


def test_shift_mel_moves_pitch_bins_and_energy():
    mel = np.tile(np.arange(80, dtype=np.float32)[None, :, None], (1, 1, 5))
    up = shift_mel(mel, STYLES["happy"])  # +2 bins, +2 dB
    gain = 2 / 20 * np.log(10)
    assert np.allclose(up[0, 10], mel[0, 8] + gain) and np.allclose(up[0, 0], mel[0, 0] + gain)
    assert np.array_equal(shift_mel(mel, STYLES["neutral"]), mel)


def test_turns_supersede_and_cancel(tmp_path):
    turns = Turns(tmp_path)
    first = turns.start("c1")
    assert turns.is_current(first)
    second = turns.start("c1")
    assert not turns.is_current(first) and turns.is_current(second)
    other = turns.start("c2")
    turns.cancel("c1")
    assert not turns.is_current(second) and turns.is_current(other)
    assert turns.start("") == "" and turns.is_current("")  # no conversation: never superseded


@pytest.mark.parametrize(("audio", "sr", "message"), [
    (np.zeros(0, np.float32), 16000, "audio: is empty"),
    (np.array([0.1, np.inf], np.float32), 16000, "audio: contains NaN or infinite"),
    (np.zeros(16000 * 3, np.float32), 16000, "audio: is 3.0 s long, the limit is 2 s"),
    (np.zeros(100, np.float32), 12345, "sample_rate: 12345 Hz"),
    (np.full(100, 300.0, np.float32), 16000, "samples must be float PCM in \\[-1, 1\\] \\(peak 300"),
])
def test_check_audio_names_the_problem(audio, sr, message):
    with pytest.raises(RequestError, match=message):
        check_audio(audio, sr, max_seconds=2)


def test_check_audio_resamples_to_16k():
    assert check_audio(np.zeros(22050, np.float32), 22050, 30).shape == (16000,)


def test_wav_round_trip(tmp_path):
    tone = 0.5 * np.sin(np.linspace(0, 200 * np.pi, 8000)).astype(np.float32)
    write_wav(tmp_path / "t.wav", tone, 8000)
    back, sr = read_wav(tmp_path / "t.wav")
    assert sr == 8000 and np.abs(back - tone).max() < 1e-4


def test_system_prompt_goes_where_the_template_has_a_system_role():
    from transformers import AutoTokenizer

    from talkserve.recipe import STARTER_LLM
    from talkserve.runtime.generate import has_system_role, prompt_ids

    tok = AutoTokenizer.from_pretrained(STARTER_LLM)
    assert not has_system_role(tok)  # the starter was trained without one: its prompt stays as trained
    assert prompt_ids(tok, "Hi.", STYLES["happy"].prompt) == prompt_ids(tok, "Hi.")
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    assert has_system_role(tok)
    happy = tok.decode(prompt_ids(tok, "Hi.", STYLES["happy"].prompt))
    assert "happy, upbeat tone" in happy and happy.index("happy") < happy.index("Hi.")
