"""train-lipsync: short schedules of the real training (published-size Wav2Lip, CPU)."""

from __future__ import annotations

import pytest
import torch

from talkserve.models.wav2lip import load_wav2lip
from talkserve.training.lipsync import LipsyncTrainConfig, TeacherData, read_video, train

pytestmark = pytest.mark.slow

TINY = {"steps": 3, "batch_size": 2, "sentences": 2, "variants": 1, "save_every": 1, "warmup": 1}


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_three_steps_are_deterministic_and_load_as_published(tmp_path):
    a = train(tmp_path / "a", LipsyncTrainConfig(**TINY))
    b = train(tmp_path / "b", LipsyncTrainConfig(**TINY))
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert all(k.startswith("module.") for k in wa)  # DataParallel's prefix, as the official files
    assert {v.dtype for v in wa.values() if v.is_floating_point()} == {torch.float16}
    assert sum(v.numel() for k, v in wa.items() if "running" not in k and "num_batches" not in k) == 36_298_035
    model = load_wav2lip(a)  # the official-layout loader reads it
    out = model(torch.zeros(1, 1, 80, 16), torch.zeros(1, 6, 96, 96))
    assert out.shape == (1, 3, 96, 96)
    import json

    meta = json.loads((tmp_path / "a" / "config.json").read_text())
    assert meta["config"]["steps"] == 3 and meta["data"]["portraits"][0] == "portrait" and meta["steps"] == 3


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    whole = weights(train(tmp_path / "whole", LipsyncTrainConfig(**TINY)))
    real = TeacherData.batch

    def stop_at_two(self, step):
        if step == 2:
            raise KeyboardInterrupt
        return real(self, step)

    monkeypatch.setattr(TeacherData, "batch", stop_at_two)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "cut", LipsyncTrainConfig(**TINY))
    assert not (tmp_path / "cut" / "wav2lip.pth").exists()
    monkeypatch.setattr(TeacherData, "batch", real)
    assert (tmp_path / "cut" / "train_state.pt").exists()
    resumed = weights(train(tmp_path / "cut", LipsyncTrainConfig(**TINY)))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert not (tmp_path / "cut" / "train_state.pt").exists()  # a finished run leaves only its weights
    monkeypatch.setattr(TeacherData, "batch", stop_at_two)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "other", LipsyncTrainConfig(**TINY))
    monkeypatch.setattr(TeacherData, "batch", real)
    with pytest.raises(ValueError, match="another config"):
        train(tmp_path / "other", LipsyncTrainConfig(**{**TINY, "lr": 1e-3}))


def talking_clip(path, seconds: float = 2.0):
    """A synthetic presenter: the sample portrait's warp mouth driven by Piper speech, as H.264 + AAC."""
    from talkserve.client.media import Mp4Writer
    from talkserve.lipsync.avatars import decode_image, prepare_portrait
    from talkserve.lipsync.warp import WarpRig, mouth_shapes
    from talkserve.models.piper_tts import PiperTTS
    from talkserve.recipe import SAMPLE_PORTRAIT, TTSRecipe

    tts = PiperTTS(*TTSRecipe().resolved_paths(), noise_scale=0.0, noise_w_scale=0.0)
    audio = tts.synthesize("Welcome to the evening news, here is what happened today.")
    audio = audio[: int(seconds * tts.sample_rate)]
    rgb = decode_image(SAMPLE_PORTRAIT.read_bytes())
    rgb = rgb[::2, ::2].copy()  # 256×256 keeps the clip small
    _, lm = prepare_portrait(rgb)
    n = round(len(audio) / tts.sample_rate * 25)
    frames = WarpRig(rgb, lm).animate(mouth_shapes(audio, tts.sample_rate, 25, n))
    writer = Mp4Writer(path)
    writer.add(frames, audio[: round(n * tts.sample_rate / 25)], tts.sample_rate)
    return writer.close(), n


def test_video_mode_trains_on_a_talking_clip(tmp_path):
    clip, n = talking_clip(tmp_path / "presenter.mp4")
    frames, audio, sr, fps = read_video(clip)
    assert abs(len(frames) - n) <= 1 and fps == 25 and abs(len(audio) / sr - n / 25) < 0.1
    out = train(tmp_path / "mine", LipsyncTrainConfig(steps=2, batch_size=2, video=str(clip)))
    model = load_wav2lip(out)
    assert sum(p.numel() for p in model.parameters()) == 36_298_035


def test_video_mode_names_a_bad_file(tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(ValueError, match=r"clip\.mp4: not a readable video"):
        train(tmp_path / "x", LipsyncTrainConfig(steps=1, video=str(bad)))
    assert not (tmp_path / "x" / "wav2lip.pth").exists()
