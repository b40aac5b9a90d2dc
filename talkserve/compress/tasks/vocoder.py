"""HiFi-GAN: SNR, STOI and PESQ of the waveform against the teacher's."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from talkserve.compress import distill as D
from talkserve.compress import gates as G
from talkserve.compress.data import DataSource
from talkserve.compress.tasks.base import Task, conv_prune, no_grad, session
from talkserve.export import export, vocoder_spec


class VocoderTask(Task):
    name = "vocoder"
    segment = 32  # mel frames per training example

    def __init__(self, teacher: nn.Module, data: DataSource, seed: int = 0):
        super().__init__(data, seed)
        self.teacher = teacher.eval()
        self.h = teacher.h

    def _mel(self, audio: np.ndarray, sr: int) -> np.ndarray:
        from talkserve.models.hifigan import mel
        from talkserve.voice.audio import resample

        return mel(resample(audio, sr, self.h.sampling_rate), self.h)[None]  # (1, 80, T)

    def held_out(self):
        return [self._mel(a, sr) for a, sr in self.data.speech.held_out]

    def train_mels(self):
        if not hasattr(self, "_train"):
            self._train = [self._mel(a, sr) for a, sr in self.data.speech.train]
        return self._train

    def example_inputs(self):
        return (torch.from_numpy(self.held_out()[0][..., : self.segment]),)

    def torch_runner(self, model):
        return no_grad(lambda x: model(torch.from_numpy(x)).numpy()[0, 0])

    def onnx_runner(self, path):
        s = session(path)
        return lambda x: s.run(None, {"mel": x})[0][0, 0]

    def metrics(self, outs, refs):
        sr = self.h.sampling_rate
        return {
            "snr": float(np.mean([G.snr(r, o) for o, r in zip(outs, refs, strict=True)])),
            "stoi": float(np.mean([G.stoi(r, o, sr) for o, r in zip(outs, refs, strict=True)])),
            "pesq": float(np.mean([G.pesq_wb(r, o, sr) for o, r in zip(outs, refs, strict=True)])),
            "error": float(np.mean([np.abs(o - r).mean() for o, r in zip(outs, refs, strict=True)])),
        }

    def prune(self, student, cfg):
        return conv_prune(self, student, cfg, [student.conv_post])

    def batch(self, step, size):
        segs = []
        for _ in range(size):
            m = self.rng.choice(self.train_mels())
            start = self.rng.randrange(max(1, m.shape[2] - self.segment))
            segs.append(np.pad(m[..., start:start + self.segment],
                               ((0, 0), (0, 0), (0, max(0, self.segment - m.shape[2] + start))), mode="edge"))
        mel = torch.from_numpy(np.concatenate(segs))
        with torch.no_grad():
            return mel, self.teacher(mel)

    def loss(self, student, batch):
        mel, target = batch
        return D.vocoder_loss(student(mel), target)

    def export(self, model, path):
        export(model.eval(), vocoder_spec(self.h.num_mels), path)

    def calibration_feeds(self, fp32):
        return [{"mel": m} for m in self.train_mels()]

    def latency_feed(self, path):
        mel = self.held_out()[0]
        return {"mel": np.tile(mel, (1, 1, 1 + 86 // mel.shape[2]))[..., :86]}  # ~1 s of speech
