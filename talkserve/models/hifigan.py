"""HiFi-GAN generator, module for module as published (jik876/hifi-gan `models.py`).

Parameter names match the official generator checkpoints (`generator_v1`, `g_02500000`, …), which
are saved as `{"generator": state_dict}` with weight-norm parameters (`conv_pre.weight_g`,
`conv_pre.weight_v`, …). `load_hifigan` takes that file as it is and folds weight norm into plain
weights, as the official inference script does with `remove_weight_norm()`; a pruned generator is
saved with plain weights and its new channel counts are read back from the tensors.

Input:  log-mel (B, 80, T) — natural log, 22050 Hz, n_fft 1024, hop 256, fmax 8000 (see `mel`)
Output: waveform (B, 1, T * hop) in [-1, 1]
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

LRELU_SLOPE = 0.1


class HiFiGANConfig(BaseModel):
    """The generator part of the official `config_v*.json`."""

    resblock: Literal["1", "2"] = Field("1", description="ResBlock1 (3 dilated pairs) or ResBlock2 (lighter)")
    upsample_rates: list[int] = Field([8, 8, 2, 2], description="Stride of each transposed conv")
    upsample_kernel_sizes: list[int] = Field([16, 16, 4, 4], description="Kernel of each transposed conv")
    upsample_initial_channel: int = Field(512, description="Channels after conv_pre; halved per upsampling")
    resblock_kernel_sizes: list[int] = Field([3, 7, 11], description="Kernel of each parallel residual block")
    resblock_dilation_sizes: list[list[int]] = Field([[1, 3, 5]] * 3, description="Dilations per residual block")
    num_mels: int = Field(80, description="Mel bins in")
    sampling_rate: int = Field(22050, description="Output sample rate")
    hop_size: int = Field(256, description="Samples per mel frame (= product of upsample_rates)")
    n_fft: int = Field(1024, description="STFT size of the mel the generator expects")
    win_size: int = Field(1024, description="STFT window of that mel")
    fmin: float = Field(0.0, description="Lowest mel filter frequency")
    fmax: float = Field(8000.0, description="Highest mel filter frequency")


V1 = HiFiGANConfig()
V2 = HiFiGANConfig(upsample_initial_channel=128)
V3 = HiFiGANConfig(resblock="2", upsample_rates=[8, 8, 4], upsample_kernel_sizes=[16, 16, 8],
                   upsample_initial_channel=256, resblock_kernel_sizes=[3, 5, 7],
                   resblock_dilation_sizes=[[1, 2], [2, 6], [3, 12]])
CONFIGS = {"v1": V1, "v2": V2, "v3": V3}


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


def _conv(cin: int, cout: int, k: int, d: int = 1) -> nn.Conv1d:
    return nn.Conv1d(cin, cout, k, 1, dilation=d, padding=get_padding(k, d))


class ResBlock1(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 3, dilation=(1, 3, 5)):
        super().__init__()
        self.convs1 = nn.ModuleList([_conv(channels, channels, kernel_size, d) for d in dilation])
        self.convs2 = nn.ModuleList([_conv(channels, channels, kernel_size) for _ in dilation])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            xt = c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
            x = xt + x
        return x


class ResBlock2(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 3, dilation=(1, 3)):
        super().__init__()
        self.convs = nn.ModuleList([_conv(channels, channels, kernel_size, d) for d in dilation])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c in self.convs:
            x = c(F.leaky_relu(x, LRELU_SLOPE)) + x
        return x


class Generator(nn.Module):
    def __init__(self, h: HiFiGANConfig = V1):
        super().__init__()
        self.h = h
        self.num_kernels = len(h.resblock_kernel_sizes)
        self.num_upsamples = len(h.upsample_rates)
        ch0 = h.upsample_initial_channel
        self.conv_pre = nn.Conv1d(h.num_mels, ch0, 7, 1, padding=3)
        self.ups = nn.ModuleList([
            nn.ConvTranspose1d(ch0 // 2**i, ch0 // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(h.upsample_rates, h.upsample_kernel_sizes, strict=True))
        ])
        block = ResBlock1 if h.resblock == "1" else ResBlock2
        self.resblocks = nn.ModuleList([
            block(ch0 // 2 ** (i + 1), k, d)
            for i in range(self.num_upsamples)
            for k, d in zip(h.resblock_kernel_sizes, h.resblock_dilation_sizes, strict=True)
        ])
        self.conv_post = nn.Conv1d(ch0 // 2**self.num_upsamples, 1, 7, 1, padding=3)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(mel)  # (B, C0, T)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))  # (B, C0/2^(i+1), T * prod(rates[:i+1]))
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            x = sum(b(x) for b in blocks) / self.num_kernels  # multi-receptive-field fusion
        x = self.conv_post(F.leaky_relu(x))  # official: default slope 0.01 here
        return torch.tanh(x)  # (B, 1, T * hop)


def init_weights(model: nn.Module, std: float = 0.01) -> None:
    """The official initialisation (normal(0, 0.01) on every conv)."""
    for m in model.modules():
        if isinstance(m, nn.Conv1d | nn.ConvTranspose1d):
            m.weight.data.normal_(0.0, std)


def fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`x.weight_g`, `x.weight_v` → `x.weight` = g · v / ‖v‖ (norm over all dims but 0, as weight_norm(dim=0))."""
    out = {}
    for key, value in state.items():
        if key.endswith(".weight_v"):
            prefix = key.removesuffix(".weight_v")
            g = state[f"{prefix}.weight_g"]
            norm = value.flatten(1).norm(dim=1).reshape(g.shape)
            out[f"{prefix}.weight"] = g * value / norm
        elif key.endswith(".parametrizations.weight.original1"):  # torch's newer weight_norm
            prefix = key.removesuffix(".parametrizations.weight.original1")
            g = state[f"{prefix}.parametrizations.weight.original0"]
            out[f"{prefix}.weight"] = g * value / value.flatten(1).norm(dim=1).reshape(g.shape)
        elif not key.endswith((".weight_g", ".parametrizations.weight.original0")):
            out[key] = value
    return out


def load_hifigan(path: str | Path | None, config: HiFiGANConfig = V1, seed: int = 0) -> Generator:
    """An official `{"generator": ...}` checkpoint (or a pruned one of ours); None = random init, official init."""
    from talkserve.models.shapes import fit_to_state_dict, read_checkpoint

    if path is None:
        torch.manual_seed(seed)
        model = Generator(config)
        init_weights(model)
        return model.eval()
    path = Path(path)
    ckpt = read_checkpoint(path, "HiFi-GAN")
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("generator"), dict):
        raise ValueError(f"{path}: expected a dict with 'generator' (the official generator file layout)")
    state = fold_weight_norm(ckpt["generator"])
    model = Generator(config)
    fit_to_state_dict(model, state, what=f"{path} (HiFi-GAN {config.resblock=})")
    return model.eval()


def save_hifigan(model: Generator, path: str | Path) -> None:
    """Plain weights in the official file layout (as after `remove_weight_norm`)."""
    torch.save({"generator": model.state_dict()}, path)


def mel_filterbank(h: HiFiGANConfig) -> np.ndarray:
    """Slaney-style mel filters (librosa's default, which HiFi-GAN uses)."""
    from talkserve.voice.audio import mel_filterbank as bank

    return bank(sr=h.sampling_rate, n_fft=h.n_fft, n_mels=h.num_mels, fmin=h.fmin, fmax=h.fmax)


def mel(audio: np.ndarray, h: HiFiGANConfig = V1) -> np.ndarray:
    """HiFi-GAN's input features: log(clamp(|STFT| · mel, 1e-5)), reflect-padded as in its meldataset."""
    pad = (h.n_fft - h.hop_size) // 2
    y = np.pad(audio.astype(np.float32), (pad, pad), mode="reflect")
    n = 1 + (len(y) - h.n_fft) // h.hop_size
    frames = np.lib.stride_tricks.as_strided(y, (n, h.n_fft), (y.strides[0] * h.hop_size, y.strides[0]))
    window = np.hanning(h.win_size + 1)[:-1].astype(np.float32)  # periodic Hann, like torch.hann_window
    spec = np.abs(np.fft.rfft(frames * window, axis=1)).T  # (n_fft/2+1, n)
    return np.log(np.clip(mel_filterbank(h) @ spec, 1e-5, None)).astype(np.float32)  # (80, n)
