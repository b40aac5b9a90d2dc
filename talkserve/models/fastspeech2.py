"""A FastSpeech2-style acoustic model in one file: symbols → 80-bin log-mel + per-symbol durations.

Encoder (FFT blocks: self-attention + conv FFN) → variance adaptor (duration, pitch and energy
predictors; pitch/energy added as conv embeddings, as FastPitch does, so the graph has no bucketize)
→ length regulator (each symbol's hidden state repeated for its duration) → decoder (FFT blocks)
→ mel linear. The mel is HiFi-GAN's (natural log, 22050 Hz, hop 256), so a HiFi-GAN generator
voices it directly. The length regulator is an alignment matmul built from the cumulative
durations, which exports to ONNX as plain Range/compare/MatMul ops.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

PAD = "_"
# keithito-style character set: pad, punctuation, space, letters. Lower-cased text maps onto it.
SYMBOLS = [PAD, *"!'(),.:;?-\" ", *"abcdefghijklmnopqrstuvwxyz"]
SYMBOL_ID = {s: i for i, s in enumerate(SYMBOLS)}


def text_to_ids(text: str) -> list[int]:
    """Lower-cased characters that the set knows; anything else is dropped (digits should be spelled)."""
    return [SYMBOL_ID[c] for c in text.lower() if c in SYMBOL_ID and c != PAD]


class FastSpeech2Config(BaseModel):
    n_symbols: int = Field(len(SYMBOLS), description="Input symbol vocabulary")
    d_model: int = Field(256, description="Hidden size of encoder/decoder")
    n_heads: int = Field(2, description="Attention heads per FFT block")
    encoder_layers: int = Field(4, description="FFT blocks before the variance adaptor")
    decoder_layers: int = Field(4, description="FFT blocks after the length regulator")
    ffn_channels: int = Field(1024, description="Conv FFN channels inside each FFT block")
    ffn_kernel: int = Field(9, description="Conv FFN kernel (FastSpeech2 uses 9)")
    variance_channels: int = Field(256, description="Channels of duration/pitch/energy predictors")
    n_mels: int = Field(80, description="Mel bins out")
    max_duration: int = Field(30, description="Largest frames per symbol (clamp)")


class SelfAttention(nn.Module):
    """Multi-head self-attention written out (nn.MultiheadAttention traces its sequence length into ONNX)."""

    def __init__(self, c: FastSpeech2Config):
        super().__init__()
        self.n_heads = c.n_heads
        self.qkv = nn.Linear(c.d_model, 3 * c.d_model)
        self.out = nn.Linear(c.d_model, c.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D)
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)  # 3 × (B, H, N, D/H)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, -1))


class FFTBlock(nn.Module):
    def __init__(self, c: FastSpeech2Config):
        super().__init__()
        self.attn = SelfAttention(c)
        self.norm1 = nn.LayerNorm(c.d_model)
        self.conv1 = nn.Conv1d(c.d_model, c.ffn_channels, c.ffn_kernel, padding=c.ffn_kernel // 2)
        self.conv2 = nn.Conv1d(c.ffn_channels, c.d_model, 1)
        self.norm2 = nn.LayerNorm(c.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D)
        x = self.norm1(x + self.attn(x))
        y = self.conv2(F.relu(self.conv1(x.transpose(1, 2)))).transpose(1, 2)
        return self.norm2(x + y)


class VariancePredictor(nn.Module):
    """Two conv+LN+ReLU layers and a linear head: one scalar per position."""

    def __init__(self, c: FastSpeech2Config):
        super().__init__()
        k = 3
        self.conv1 = nn.Conv1d(c.d_model, c.variance_channels, k, padding=k // 2)
        self.norm1 = nn.LayerNorm(c.variance_channels)
        self.conv2 = nn.Conv1d(c.variance_channels, c.variance_channels, k, padding=k // 2)
        self.norm2 = nn.LayerNorm(c.variance_channels)
        self.linear = nn.Linear(c.variance_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D) → (B, N)
        x = self.norm1(F.relu(self.conv1(x.transpose(1, 2))).transpose(1, 2))
        x = self.norm2(F.relu(self.conv2(x.transpose(1, 2))).transpose(1, 2))
        return self.linear(x).squeeze(-1)


def length_regulate(h: torch.Tensor, durations: torch.Tensor) -> torch.Tensor:
    """(B, N, D), (B, N) int frames → (B, T, D), T = max total; symbol i fills frames [start_i, end_i)."""
    end = torch.cumsum(durations, dim=1)  # (B, N)
    start = end - durations
    t = torch.arange(end[:, -1].max(), device=h.device)[None, :, None]  # (1, T, 1); a Range op in ONNX
    align = ((t >= start[:, None, :]) & (t < end[:, None, :])).to(h.dtype)  # (B, T, N)
    return align @ h


class FastSpeech2(nn.Module):
    def __init__(self, c: FastSpeech2Config | None = None):
        super().__init__()
        c = c or FastSpeech2Config()
        self.config = c
        self.embed = nn.Embedding(c.n_symbols, c.d_model, padding_idx=0)
        self.encoder = nn.ModuleList([FFTBlock(c) for _ in range(c.encoder_layers)])
        self.duration = VariancePredictor(c)
        self.pitch = VariancePredictor(c)
        self.energy = VariancePredictor(c)
        self.pitch_embed = nn.Conv1d(1, c.d_model, 9, padding=4)
        self.energy_embed = nn.Conv1d(1, c.d_model, 9, padding=4)
        self.decoder = nn.ModuleList([FFTBlock(c) for _ in range(c.decoder_layers)])
        self.mel_linear = nn.Linear(c.d_model, c.n_mels)

    @staticmethod
    def positions(n: int, d: int, device) -> torch.Tensor:
        """Sinusoidal positions (N, D)."""
        pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-9.210340372 / d))
        return torch.cat([torch.sin(pos * freq), torch.cos(pos * freq)], dim=1)

    def encode(self, symbols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) ids → adapted hidden (B, N, D), log-duration (B, N)."""
        x = self.embed(symbols)
        x = x + self.positions(symbols.shape[1], x.shape[2], x.device)
        for block in self.encoder:
            x = block(x)
        log_duration = self.duration(x)
        x = x + self.pitch_embed(self.pitch(x)[:, None, :]).transpose(1, 2)
        x = x + self.energy_embed(self.energy(x)[:, None, :]).transpose(1, 2)
        return x, log_duration

    def frames(self, log_duration: torch.Tensor, pace: float = 1.0) -> torch.Tensor:
        return torch.clamp(torch.round((torch.exp(log_duration) - 1) * pace), 1, self.config.max_duration).long()

    def decode(self, x: torch.Tensor, durations: torch.Tensor) -> torch.Tensor:
        """Adapted hidden (B, N, D) + frames per symbol (B, N) → log-mel (B, 80, T)."""
        y = length_regulate(x, durations)
        y = y + self.positions(y.shape[1], y.shape[2], y.device)
        for block in self.decoder:
            y = block(y)
        return self.mel_linear(y).transpose(1, 2)

    def forward(self, symbols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) ids → log-mel (B, 80, T), durations (B, N) frames. Inference: predicted durations."""
        x, log_duration = self.encode(symbols)
        durations = self.frames(log_duration)
        return self.decode(x, durations), durations


def load_fastspeech2(path: str | Path | None, seed: int = 0) -> FastSpeech2:
    """A checkpoint saved by `save_fastspeech2` (config + state_dict); None = random init."""
    from talkserve.models.shapes import fit_to_state_dict

    if path is None:
        torch.manual_seed(seed)
        model = FastSpeech2()
        with torch.no_grad():  # start near 6 frames (70 ms) a character, so random init still speaks at length
            model.duration.linear.bias.fill_(math.log(1 + 6))
        return model.eval()
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        config = FastSpeech2Config.model_validate(ckpt["config"])
        state = ckpt["model"]
    except Exception as e:  # unreadable, truncated or foreign files raise many different types
        raise ValueError(f"{path}: not a talkserve FastSpeech2 checkpoint ({e})") from e
    model = FastSpeech2(config)
    fit_to_state_dict(model, state, what=f"{path} (FastSpeech2)")
    return model.eval()


def save_fastspeech2(model: FastSpeech2, path: str | Path) -> None:
    torch.save({"config": model.config.model_dump(), "model": model.state_dict()}, path)


class FastSpeech2TTS:
    """Served form: acoustic ONNX → HiFi-GAN ONNX, text → mono float32 speech at `sample_rate`."""

    def __init__(self, acoustic: str | Path | Runner, vocoder: str | Path | Runner, sample_rate: int = 22050,
                 threads: int = 0):
        """Each model: an ONNX file run here by ONNX Runtime, or a callable feeds → outputs (the GPU
        target passes BLS calls to its TensorRT engines)."""
        self.acoustic = acoustic if callable(acoustic) else _onnx_runner(acoustic, threads)
        self.vocoder = vocoder if callable(vocoder) else _onnx_runner(vocoder, threads)
        self.sample_rate = sample_rate

    def synthesize(self, text: str, style=None):
        """`style` (talkserve.runtime.emotion.Style): pitch and energy applied to the predicted mel."""
        import numpy as np

        from talkserve.runtime.emotion import shift_mel

        ids = text_to_ids(text)
        if not ids:
            return np.zeros(0, np.float32)
        mel = self.acoustic({"symbols": np.asarray([ids], np.int64)})[0]
        if style is not None:
            mel = shift_mel(mel, style)
        return self.vocoder({"mel": mel})[0].reshape(-1).astype(np.float32)


Runner = Callable[[dict], list]  # feeds → outputs in the model's order


def _onnx_runner(path: str | Path, threads: int) -> Runner:
    import onnxruntime as ort

    from talkserve.runtime.cpu_sessions import session_options

    session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)
