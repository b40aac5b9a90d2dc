"""Wav2Lip: mouth PSNR/SSIM on held-out windows, lip sync (landmarks) on whole held-out sentences."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from talkserve.compress import gates as G
from talkserve.compress.data import DataSource
from talkserve.compress.tasks.base import Task, conv_prune, no_grad, session
from talkserve.export import export_wav2lip

MOUTH = (slice(56, 92), slice(20, 76))  # rows, cols of the 96×96 face where the mouth is redrawn


class Wav2LipTask(Task):
    name = "wav2lip"
    frames = 8  # video frames per example
    sync_sentences = 2  # whole held-out sentences the sync gates read, after the windows

    def __init__(self, teacher: nn.Module, data: DataSource, seed: int = 0):
        super().__init__(data, seed)
        self.teacher = teacher.eval()

    def _examples(self, speech: list, faces: list) -> list[tuple[np.ndarray, np.ndarray]]:
        from talkserve.lipsync import face_input
        from talkserve.voice.audio import mel_windows, wav2lip_mel

        out = []
        for i, (audio, sr) in enumerate(speech):
            mel = mel_windows(wav2lip_mel(audio, sr), max(self.frames, int(len(audio) / sr * 25)), 25.0)
            start = (i * 7) % max(1, len(mel) - self.frames)
            out.append((mel[start:start + self.frames], face_input(faces[i % len(faces)], self.frames)))
        return out

    def _sentences(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every frame of the first held-out sentences, on the first held-out face."""
        from talkserve.lipsync import face_input
        from talkserve.voice.audio import frame_count, mel_windows, wav2lip_mel

        out = []
        for audio, sr in self.data.speech.held_out[: self.sync_sentences]:
            n = frame_count(len(audio), sr, 25.0)
            out.append((mel_windows(wav2lip_mel(audio, sr), n, 25.0), face_input(self.data.faces.held_out[0], n)))
        return out

    def held_out(self):
        if not hasattr(self, "_held"):
            self._windows = self._examples(self.data.speech.held_out, self.data.faces.held_out)
            self._held = self._windows + self._sentences()
        return self._held

    def train_examples(self):
        if not hasattr(self, "_train"):
            self._train = self._examples(self.data.speech.train, self.data.faces.train)
        return self._train

    def _sync(self, outs: list) -> dict[str, float]:
        from talkserve.lipsync.frames import faces_rgb
        from talkserve.lipsync.warp import speech_envelope

        faces = np.concatenate([faces_rgb(o) for o in outs])
        env = np.concatenate([speech_envelope(a, sr, 25.0, len(o))
                              for (a, sr), o in zip(self.data.speech.held_out, outs, strict=False)])
        rest = float(G.mouth_openings(self.data.faces.held_out[:1])[0])
        return G.lip_sync(G.mouth_openings(faces), env, rest)

    def metrics(self, outs, refs):
        self.held_out()
        k = len(self._windows)
        o, r = np.concatenate(outs[:k]), np.concatenate(refs[:k])
        om, rm = o[..., MOUTH[0], MOUTH[1]], r[..., MOUTH[0], MOUTH[1]]
        student, teacher = self._sync(outs[k:]), self._sync(refs[k:])
        return {"mouth_psnr": G.psnr(om, rm), "mouth_ssim": G.ssim(om, rm), "error": float(np.abs(o - r).mean()),
                "sync_r": student["sync_r"], "sync_r_drop": teacher["sync_r"] - student["sync_r"],
                "sync_lag_shift": abs(student["sync_lag"] - teacher["sync_lag"])}

    def example_inputs(self):
        mel, face = self.held_out()[0]
        return torch.from_numpy(mel[:1]), torch.from_numpy(face[:1])

    def torch_runner(self, model):
        return no_grad(lambda x: model(torch.from_numpy(x[0]), torch.from_numpy(x[1])).numpy())

    def onnx_runner(self, path):
        s = session(path)
        return lambda x: s.run(None, {"mel": x[0], "face": x[1]})[0]

    def prune(self, student, cfg):
        return conv_prune(self, student, cfg, [student.output_block[1]])

    def batch(self, step, size):
        ex = [self.rng.choice(self.train_examples()) for _ in range(max(1, size // 2))]
        mel = torch.from_numpy(np.concatenate([e[0] for e in ex]))
        face = torch.from_numpy(np.concatenate([e[1] for e in ex]))
        with torch.no_grad():
            return mel, face, self.teacher(mel, face)

    def loss(self, student, batch):
        mel, face, target = batch
        return torch.nn.functional.l1_loss(student(mel, face), target)

    def export(self, model, path):
        export_wav2lip(model, path)

    def calibration_feeds(self, fp32):
        return [{"mel": m, "face": f} for m, f in self.train_examples()]

    def latency_feed(self, path):
        mel, face = self.held_out()[0]
        return {"mel": np.concatenate([mel, mel])[:16], "face": np.concatenate([face, face])[:16]}
