from pathlib import Path

import numpy as np
import pytest

from talkserve.voice.audio import MEL_FPS, frame_count, mel_windows, pad_to_frames, resample, wav2lip_mel

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "wav2lip_mel_reference.npz"


def test_mel_matches_wav2lip_reference():
    """Wav2Lip's audio.melspectrogram computed with librosa (saved once, see the npz) on a chirp."""
    ref = np.load(REFERENCE)
    mel = wav2lip_mel(ref["wav"], 16000)
    assert mel.shape == ref["mel"].shape == (80, 41)
    np.testing.assert_allclose(mel, ref["mel"], atol=1e-4)


def test_mel_rate_is_80_frames_per_second_at_any_input_rate():
    t = np.arange(22050 * 2) / 22050
    mel = wav2lip_mel(np.sin(2 * np.pi * 440 * t).astype(np.float32), 22050)
    assert mel.shape[0] == 80
    assert abs(mel.shape[1] - 2 * MEL_FPS) <= 1
    assert mel.min() >= -4 and mel.max() <= 4


def test_resample_keeps_duration_and_pitch():
    sr_in, sr_out = 22050, 16000
    t = np.arange(sr_in) / sr_in
    y = resample(np.sin(2 * np.pi * 440 * t), sr_in, sr_out)
    assert len(y) == sr_out
    peak = np.argmax(np.abs(np.fft.rfft(y))) * sr_out / len(y)
    assert abs(peak - 440) < 2


def test_mel_windows_follow_wav2lip_indexing():
    mel = np.arange(80 * 100, dtype=np.float32).reshape(80, 100)
    windows = mel_windows(mel, n_frames=30, fps=25)
    assert windows.shape == (30, 1, 80, 16)
    for i in (0, 1, 7, 29):
        start = min(int(i * 80 / 25), 100 - 16)  # 3.2 mel frames per video frame, clamped at the end
        np.testing.assert_array_equal(windows[i, 0], mel[:, start : start + 16])


def test_mel_windows_pad_a_short_sentence():
    windows = mel_windows(np.zeros((80, 5), np.float32), n_frames=2, fps=25)
    assert windows.shape == (2, 1, 80, 16)
    assert (windows[0, 0, :, 5:] == -4).all()


@pytest.mark.parametrize(("samples", "sr", "frames"),
                         [(22050, 22050, 25), (882 * 7 + 1, 22050, 7), (16000 // 2, 16000, 12)])
def test_frame_count(samples, sr, frames):
    assert frame_count(samples, sr, 25) == frames


@pytest.mark.parametrize("n", [1, 881, 882, 883, 22050])
def test_pad_to_frames_gives_whole_frames_and_keeps_the_audio(n):
    audio = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    padded = pad_to_frames(audio, 22050, 25)
    assert len(padded) % 882 == 0 and len(padded) >= n and len(padded) - n < 882
    np.testing.assert_array_equal(padded[:n], audio)
    assert not padded[n:].any()
