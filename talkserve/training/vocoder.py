"""Fit a HiFi-GAN generator to real speech for a few hundred steps (mel → waveform, no GAN).

Why: no HiFi-GAN weights reach this machine, and a generator with the official init
(normal(0, 0.01)) emits a constant — `conv_post`'s bias — with fluctuations ~50 dB below it.
Against such a teacher SNR only measures the DC and STOI/PESQ measure nothing of speech. A few
hundred steps of the generator loss without the discriminators (multi-resolution STFT +
waveform L1, as in Parallel WaveGAN's warm-up) on the Piper voice's real speech give a teacher
whose output is speech-band audio that follows the mel, so the vocoder gates mean something.
It is not a good vocoder; it is an honest teacher to compress.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from pydantic import BaseModel, Field
from torch import nn
from tqdm import tqdm

from talkserve.compress.distill import vocoder_loss
from talkserve.models.hifigan import mel
from talkserve.voice.audio import resample


class FitConfig(BaseModel):
    """Warm-up schedule; HiFi-GAN's own optimiser settings (AdamW, betas 0.8/0.99)."""

    steps: int = Field(200, ge=0, description="Optimizer steps (~1 s each for V1 on 2 cores)")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate")
    batch_size: int = Field(4, ge=1, description="Segments per step")
    segment_frames: int = Field(32, ge=1, description="Mel frames per segment")
    seed: int = Field(0, description="Seed for segment order")


def fit_to_speech(generator: nn.Module, speech: list[tuple[np.ndarray, int]], cfg: FitConfig) -> list[float]:
    """Train `generator` (config `generator.h`) in place on (audio, sample rate) clips; returns losses."""
    h = generator.h
    clips = [resample(a, sr, h.sampling_rate) for a, sr in speech]
    mels = [mel(c, h) for c in clips]  # (80, T) each, T = len / hop
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    opt = torch.optim.AdamW(generator.parameters(), lr=cfg.lr, betas=(0.8, 0.99))
    seg, hop, losses = cfg.segment_frames, h.hop_size, []
    generator.train()
    for _ in tqdm(range(cfg.steps), desc="fit vocoder teacher", leave=False, mininterval=2):
        mel_batch, wav_batch = [], []
        for _ in range(cfg.batch_size):
            i = rng.randrange(len(clips))
            start = rng.randrange(max(1, mels[i].shape[1] - seg))
            m = mels[i][:, start:start + seg]
            w = clips[i][start * hop:(start + seg) * hop]
            mel_batch.append(np.pad(m, ((0, 0), (0, seg - m.shape[1])), mode="edge"))
            wav_batch.append(np.pad(w, (0, seg * hop - len(w))))
        y = generator(torch.from_numpy(np.stack(mel_batch)))  # (B, 1, seg·hop)
        loss = vocoder_loss(y, torch.from_numpy(np.stack(wav_batch))[:, None])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(generator.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    generator.eval()
    return losses
