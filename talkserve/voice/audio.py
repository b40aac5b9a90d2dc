"""Audio helpers: resampling and Wav2Lip's own log-mel spectrogram, in NumPy.

The mel settings are Wav2Lip's `hparams.py` (16 kHz, n_fft 800, hop 200 → 80 mel frames per
second, 80 bins, fmin 55, fmax 7600, pre-emphasis 0.97, symmetric normalisation to ±4); the
filterbank is librosa's Slaney mel. A checkpoint trained on those features needs exactly these.
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

MEL_SR = 16000
N_FFT = 800
HOP = 200
N_MELS = 80
FMIN, FMAX = 55.0, 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB, REF_LEVEL_DB, MAX_ABS = -100.0, 20.0, 4.0
MEL_FPS = MEL_SR / HOP  # 80 mel frames per second


def resample(audio: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased)."""
    if sr_from == sr_to:
        return audio.astype(np.float32, copy=False)
    g = gcd(sr_from, sr_to)
    return resample_poly(audio, sr_to // g, sr_from // g).astype(np.float32)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    # Slaney scale: linear below 1 kHz, logarithmic above (librosa htk=False).
    f = np.asarray(f, dtype=np.float64)
    mel = f / (200.0 / 3)
    log_region = f >= 1000.0
    return np.where(log_region, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mel)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f = m * (200.0 / 3)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), f)


@lru_cache(maxsize=4)
def mel_filterbank(sr: int = MEL_SR, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
    """(n_mels, 1 + n_fft // 2) triangular filters with Slaney area normalisation."""
    fft_freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_pts = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_pts)
    ramps = mel_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_pts[2 : n_mels + 2] - mel_pts[:n_mels]))[:, None]
    return weights.astype(np.float32)


def _stft_magnitude(y: np.ndarray) -> np.ndarray:
    """|STFT| as librosa 0.7 computes it: centred, reflect-padded, periodic Hann."""
    y = np.pad(y, N_FFT // 2, mode="reflect")
    n_frames = 1 + (len(y) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)
    return np.abs(np.fft.rfft(y[idx] * window, axis=1)).T  # (1 + n_fft/2, frames)


def wav2lip_mel(audio: np.ndarray, sr: int) -> np.ndarray:
    """(80, frames) normalised log-mel at 80 frames/s, Wav2Lip's `audio.melspectrogram`."""
    y = resample(np.asarray(audio, dtype=np.float32), sr, MEL_SR).astype(np.float64)
    if len(y) < N_FFT // 2 + 1:  # reflect padding needs a few samples
        y = np.pad(y, (0, N_FFT // 2 + 1 - len(y)))
    y = np.append(y[0], y[1:] - PREEMPHASIS * y[:-1])
    mel = mel_filterbank() @ _stft_magnitude(y)
    min_level = np.exp(MIN_LEVEL_DB / 20 * np.log(10))
    s = 20 * np.log10(np.maximum(min_level, mel)) - REF_LEVEL_DB
    s = (2 * MAX_ABS) * ((s - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS
    return np.clip(s, -MAX_ABS, MAX_ABS).astype(np.float32)


def frame_count(n_samples: int, sr: int, fps: float) -> int:
    """Video frames that cover `n_samples` of audio."""
    return round(n_samples * fps / sr)


def mel_windows(mel: np.ndarray, n_frames: int, fps: float, step: int = 16) -> np.ndarray:
    """(n_frames, 1, 80, step) windows, one per video frame, as Wav2Lip's inference slices them.

    Frame i starts at mel index int(i * 80 / fps); windows running past the end take the last
    `step` frames (the mel is right-padded first when it is shorter than one window).
    """
    if mel.shape[1] < step:
        mel = np.pad(mel, ((0, 0), (0, step - mel.shape[1])), constant_values=-MAX_ABS)
    total = mel.shape[1]
    starts = np.minimum((np.arange(n_frames) * (MEL_FPS / fps)).astype(int), total - step)
    return np.stack([mel[:, s : s + step] for s in starts])[:, None].astype(np.float32)


def pad_to_frames(audio: np.ndarray, sr: int, fps: float) -> np.ndarray:
    """Right-pad with silence to a whole number of video frames, so audio and video chunk
    boundaries coincide and per-chunk rounding never drifts the lips off the voice."""
    per_frame = sr / fps
    n_frames = int(np.ceil(len(audio) / per_frame - 1e-9))
    target = round(n_frames * per_frame)
    return np.pad(audio, (0, max(0, target - len(audio)))).astype(np.float32)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """WAV (8/16/32-bit integer or float PCM, any channels) → mono float32 in [-1, 1], sample rate."""
    from scipy.io import wavfile

    try:
        sr, data = wavfile.read(str(path))
    except (ValueError, OSError) as e:
        raise ValueError(f"{path}: not a readable WAV file ({e})") from e
    if data.dtype.kind in "iu":
        info = np.iinfo(data.dtype)
        data = (data.astype(np.float32) - (info.max + info.min + 1) / 2) / ((info.max - info.min + 1) / 2)
    data = data.astype(np.float32)
    return (data.mean(axis=1) if data.ndim == 2 else data), int(sr)


def write_wav(path: str | Path, audio: np.ndarray, sr: int) -> None:
    """Mono float32 in [-1, 1] → 16-bit PCM WAV."""
    from scipy.io import wavfile

    wavfile.write(str(path), sr, (np.clip(audio, -1, 1) * 32767).round().astype(np.int16))
