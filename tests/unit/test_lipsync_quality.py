"""Lip-sync quality without SyncNet: landmarks on the generated faces against the speech, on the
sample portrait and on one no training ever saw (Grace Hopper, shipped with matplotlib)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import avatar_of, held_out_portrait

from talkserve.compress import gates as G
from talkserve.compress.sync import delivered_faces, evaluate_sentences, warp_faces, wav2lip_faces
from talkserve.recipe import SAMPLE_PORTRAIT

SENTENCES = ["Hello there, how are you doing today?", "I can talk about many things, just ask me.",
             "Good morning to you."]


@pytest.fixture(scope="module")
def speech():
    """Piper speech with 0.24 s of silence around each sentence (what a reply's pauses look like)."""
    from talkserve.models.piper_tts import PiperTTS
    from talkserve.recipe import TTSRecipe

    tts = PiperTTS(*TTSRecipe().resolved_paths(), noise_scale=0.0, noise_w_scale=0.0)
    pad = np.zeros(int(0.24 * tts.sample_rate), np.float32)
    return [(np.concatenate([pad, tts.synthesize(t), pad]), tts.sample_rate) for t in SENTENCES]


@pytest.fixture(scope="module", params=["sample", "held-out"])
def avatar(request):
    return avatar_of(SAMPLE_PORTRAIT, "sample") if request.param == "sample" else avatar_of(
        held_out_portrait(), "hopper")


def test_best_lag_finds_a_known_shift():
    rng = np.random.default_rng(0)
    y = np.convolve(rng.standard_normal(200), np.ones(5) / 5, mode="same")
    r, lag = G.best_lag(np.roll(y, 2), y)
    assert lag == 2 and r > 0.99
    r, lag = G.best_lag(y, y)
    assert lag == 0 and r > 0.999


def test_warp_meets_the_sync_targets(avatar, speech):
    m = evaluate_sentences(lambda a, sr: warp_faces(avatar, a, sr), avatar, speech)
    assert m["sync_r"] >= 0.6 and abs(m["sync_lag"]) <= 1 and m["silent_closed"] >= 0.9, m
    assert m["identity_psnr"] >= 40, m  # it draws nothing outside the mouth


@pytest.fixture(scope="module")
def starter():
    import torch

    from talkserve.models.wav2lip import load_wav2lip

    model = load_wav2lip(None)

    def generate(mel, face):
        with torch.no_grad():
            return model(torch.from_numpy(mel), torch.from_numpy(face)).numpy()

    return generate


@pytest.mark.slow
def test_starter_wav2lip_draws_a_face_whose_mouth_follows_the_speech(starter, avatar, speech):
    faces = wav2lip_faces(starter, avatar, *speech[0], colour=False)
    assert faces.std(axis=(1, 2)).mean() > 20  # a face, not a flat patch
    raw = evaluate_sentences(lambda a, sr: wav2lip_faces(starter, avatar, a, sr, colour=False), avatar, speech)
    assert raw["sync_r"] >= 0.6 and abs(raw["sync_lag"]) <= 1 and raw["silent_closed"] >= 0.9, raw
    # the network's own face outside the mouth: close on the portrait it trained on, weaker on a new
    # one (measured 32.9 and 22.7 dB: five training identities are few; see the README)
    assert raw["identity_psnr"] >= (30 if avatar.id == "sample" else 20), raw
    seen = evaluate_sentences(lambda a, sr: delivered_faces(starter, avatar, a, sr), avatar, speech)
    assert seen["identity_psnr"] >= 30 and seen["sync_r"] >= 0.6, seen  # what a viewer gets after paste-back
