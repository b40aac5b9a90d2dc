"""FastSpeech2 acoustic model: log-mel L1 and duration error against the teacher."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from talkserve.compress import distill as D
from talkserve.compress.data import DataSource
from talkserve.compress.tasks.base import Task, conv_prune, no_grad, session
from talkserve.export import acoustic_spec, export


class AcousticTask(Task):
    name = "acoustic"

    def __init__(self, teacher: nn.Module, data: DataSource, seed: int = 0):
        super().__init__(data, seed)
        self.teacher = teacher.eval()

    @staticmethod
    def _ids(text: str) -> np.ndarray:
        from talkserve.models.fastspeech2 import text_to_ids

        return np.asarray([text_to_ids(text) or [1]], np.int64)

    def held_out(self):
        return [self._ids(t) for t in self.data.texts.held_out]

    def example_inputs(self):
        return (torch.from_numpy(self.held_out()[0]),)

    def torch_runner(self, model):
        return no_grad(lambda x: tuple(t.numpy() for t in model(torch.from_numpy(x))))

    def onnx_runner(self, path):
        s = session(path)
        return lambda x: tuple(s.run(None, {"symbols": x}))

    def metrics(self, outs, refs):
        mel_l1, dur = [], []
        for (mel, d), (rmel, rd) in zip(outs, refs, strict=True):
            n = min(mel.shape[2], rmel.shape[2])
            mel_l1.append(float(np.abs(mel[..., :n] - rmel[..., :n]).mean()))
            dur.append(float(np.abs(d.astype(np.float64) - rd).mean()))
        return {"mel_l1": float(np.mean(mel_l1)), "duration_error": float(np.mean(dur)),
                "error": float(np.mean(mel_l1) + np.mean(dur))}

    def prune(self, student, cfg):
        from talkserve.models.fastspeech2 import SelfAttention

        ignored = [m for m in student.modules() if isinstance(m, SelfAttention)]
        ignored += [student.embed, student.mel_linear, student.duration.linear, student.pitch.linear,
                    student.energy.linear]
        return conv_prune(self, student, cfg, ignored)

    def batch(self, step, size):
        return [torch.from_numpy(self._ids(self.rng.choice(self.data.texts.train))) for _ in range(size)]

    def loss(self, student, batch):
        total = 0.0
        for ids in batch:
            with torch.no_grad():
                x, log_d = self.teacher.encode(ids)
                d = self.teacher.frames(log_d)
                mel = self.teacher.decode(x, d)
            xs, log_ds = student.encode(ids)
            total = total + D.acoustic_loss(student.decode(xs, d), mel, log_ds, log_d)
        return total / len(batch)

    def export(self, model, path):
        export(model.eval(), acoustic_spec(), path)

    def calibration_feeds(self, fp32):
        return [{"symbols": self._ids(t)} for t in self.data.texts.train]

    def latency_feed(self, path):
        return {"symbols": self._ids("This is one ordinary sentence of about the usual length.")}
