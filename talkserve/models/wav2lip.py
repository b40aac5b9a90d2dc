"""Wav2Lip generator, layer for layer as published (Rudrabha/Wav2Lip `models/wav2lip.py`).

The module names match the official checkpoints (`wav2lip.pth`, `wav2lip_gan.pth`), which are saved
as `{"state_dict": {"module.face_encoder_blocks.0.0.conv_block.0.weight": ..., ...}}` by
DataParallel; `load_wav2lip` takes that file as it is.

Inputs:  mel (B, 1, 80, 16)  one 0.2 s window of Wav2Lip's log-mel (see talkserve.voice.audio)
         face (B, 6, 96, 96) lower-half-masked face ++ reference face, RGB order as BGR, in [0, 1]
Output:  (B, 3, 96, 96) the face with a new mouth, in [0, 1]
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class Conv2d(nn.Module):
    """Conv + BatchNorm + ReLU, with an optional identity residual (official `Conv2d`)."""

    def __init__(self, cin: int, cout: int, kernel_size, stride, padding, residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class Conv2dTranspose(nn.Module):
    """ConvTranspose + BatchNorm + ReLU (official `Conv2dTranspose`)."""

    def __init__(self, cin: int, cout: int, kernel_size, stride, padding, output_padding: int = 0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel_size, stride, padding, output_padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _res(c: int) -> Conv2d:
    return Conv2d(c, c, 3, 1, 1, residual=True)


class Wav2Lip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(Conv2d(6, 16, 7, 1, 3)),  # 96x96
            nn.Sequential(Conv2d(16, 32, 3, 2, 1), _res(32), _res(32)),  # 48x48
            nn.Sequential(Conv2d(32, 64, 3, 2, 1), _res(64), _res(64), _res(64)),  # 24x24
            nn.Sequential(Conv2d(64, 128, 3, 2, 1), _res(128), _res(128)),  # 12x12
            nn.Sequential(Conv2d(128, 256, 3, 2, 1), _res(256), _res(256)),  # 6x6
            nn.Sequential(Conv2d(256, 512, 3, 2, 1), _res(512)),  # 3x3
            nn.Sequential(Conv2d(512, 512, 3, 1, 0), Conv2d(512, 512, 1, 1, 0)),  # 1x1
        ])
        self.audio_encoder = nn.Sequential(
            Conv2d(1, 32, 3, 1, 1), _res(32), _res(32),  # 80x16
            Conv2d(32, 64, 3, (3, 1), 1), _res(64), _res(64),  # 27x16
            Conv2d(64, 128, 3, 3, 1), _res(128), _res(128),  # 9x6
            Conv2d(128, 256, 3, (3, 2), 1), _res(256),  # 3x3
            Conv2d(256, 512, 3, 1, 0), Conv2d(512, 512, 1, 1, 0),  # 1x1
        )
        self.face_decoder_blocks = nn.ModuleList([
            nn.Sequential(Conv2d(512, 512, 1, 1, 0)),  # 1x1
            nn.Sequential(Conv2dTranspose(1024, 512, 3, 1, 0), _res(512)),  # 3x3
            nn.Sequential(Conv2dTranspose(1024, 512, 3, 2, 1, output_padding=1), _res(512), _res(512)),  # 6x6
            nn.Sequential(Conv2dTranspose(768, 384, 3, 2, 1, output_padding=1), _res(384), _res(384)),  # 12x12
            nn.Sequential(Conv2dTranspose(512, 256, 3, 2, 1, output_padding=1), _res(256), _res(256)),  # 24x24
            nn.Sequential(Conv2dTranspose(320, 128, 3, 2, 1, output_padding=1), _res(128), _res(128)),  # 48x48
            nn.Sequential(Conv2dTranspose(160, 64, 3, 2, 1, output_padding=1), _res(64), _res(64)),  # 96x96
        ])
        self.output_block = nn.Sequential(Conv2d(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid())

    def forward(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        x = self.audio_encoder(mel)  # (B, 512, 1, 1)
        feats = []
        f = face
        for block in self.face_encoder_blocks:
            f = block(f)
            feats.append(f)
        for block in self.face_decoder_blocks:
            x = block(x)
            x = torch.cat((x, feats.pop()), dim=1)  # U-Net skip from the matching encoder level
        return self.output_block(x)  # (B, 3, 96, 96)


def wav2lip_state_dict(model: nn.Module) -> dict:
    """The published checkpoint layout: DataParallel's `module.` prefix under `state_dict`."""
    return {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}


STARTER = Path(__file__).resolve().parent.parent / "assets" / "starter_wav2lip" / "wav2lip.pth"


def load_wav2lip(path: str | Path | None = None) -> Wav2Lip:
    """Load a Wav2Lip checkpoint in the official layout; `None` = our starter weights, trained by
    `talkserve train-lipsync` (fp16 in the same layout; loaded into the fp32 model)."""
    from talkserve.models.shapes import read_checkpoint

    model = Wav2Lip()
    path = Path(path) if path is not None else STARTER
    ckpt = read_checkpoint(path, "Wav2Lip")
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a dict with 'state_dict', got {type(ckpt).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: not the Wav2Lip layout (missing {missing[:3]}..., unexpected {unexpected[:3]}...)"
        )
    return model.eval()
