"""Distillation from the uncompressed teacher: one loop, one loss per model kind.

`distill(student, batches, loss, cfg)` runs `cfg.steps` Adam steps; `batches(step)` returns a
batch whose targets the caller has already computed with the teacher (so the teacher runs once
per batch, under no_grad). BatchNorm statistics stay frozen: a few hundred small-batch steps would
otherwise replace well-estimated running stats with noisy ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from talkserve.compress.config import DistillConfig

Loss = Callable[[nn.Module, object], torch.Tensor]


def distill(student: nn.Module, batches: Callable[[int], object], loss: Loss, cfg: DistillConfig,
            desc: str = "distill") -> list[float]:
    """Train `student` in place; returns the loss per step."""
    if cfg.steps == 0:
        return []
    torch.manual_seed(cfg.seed)
    student.eval()  # frozen BN stats, no dropout; gradients still flow
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    history = []
    for step in tqdm(range(cfg.steps), desc=desc, leave=False, mininterval=2):
        value = loss(student, batches(step))
        opt.zero_grad(set_to_none=True)
        value.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        history.append(float(value.detach()))
    student.eval()
    return history


def kd_logits(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float,
              alpha: float, ignore_index: int = -100) -> torch.Tensor:
    """α·T²·KL(teacher_T ‖ student_T) + (1−α)·CE(labels), over positions whose label is not ignored."""
    keep = labels != ignore_index
    s, t = student[keep] / temperature, teacher[keep] / temperature
    kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean")
    ce = F.cross_entropy(student[keep], labels[keep])
    return alpha * temperature**2 * kl + (1 - alpha) * ce


def stft_magnitude(y: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
    window = torch.hann_window(win, device=y.device)
    spec = torch.stft(y, n_fft, hop, win, window, return_complex=True)
    return spec.abs().clamp_min(1e-7)


def multi_resolution_stft(y: torch.Tensor, target: torch.Tensor,
                          resolutions=((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))) -> torch.Tensor:
    """Spectral convergence + log-magnitude L1, averaged over resolutions (Parallel WaveGAN's loss)."""
    total = y.new_zeros(())
    for n_fft, hop, win in resolutions:
        s, t = stft_magnitude(y, n_fft, hop, win), stft_magnitude(target, n_fft, hop, win)
        total = total + torch.linalg.norm(t - s) / torch.linalg.norm(t) + F.l1_loss(s.log(), t.log())
    return total / len(resolutions)


def vocoder_loss(y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, 1, S) waveforms: multi-resolution STFT + waveform L1."""
    return multi_resolution_stft(y.squeeze(1), target.squeeze(1)) + F.l1_loss(y, target)


def acoustic_loss(mel: torch.Tensor, target_mel: torch.Tensor, log_duration: torch.Tensor,
                  target_log_duration: torch.Tensor) -> torch.Tensor:
    """Mel L1 (student decoded on the teacher's durations) + log-duration MSE."""
    return F.l1_loss(mel, target_mel) + F.mse_loss(log_duration, target_log_duration)
