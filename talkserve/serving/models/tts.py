"""Triton python model `tts`: one sentence of text → speech padded to whole video frames.

`kind` (config parameter) picks the engine: a Piper VITS voice, or FastSpeech2 + HiFi-GAN ONNX.
"""

import time

import numpy as np
import triton_python_backend_utils as pb_utils

from talkserve import spec
from talkserve.models.voice import load_voice
from talkserve.runtime.emotion import parse_emotion, style
from talkserve.runtime.turns import Turns
from talkserve.serving.triton import Metrics, ModelArgs, bls, run_each, scalar_bytes
from talkserve.spec import TTSParams
from talkserve.text import decode_text
from talkserve.voice.audio import pad_to_frames


class TritonPythonModel:
    def initialize(self, args):
        self.args = ModelArgs(args, TTSParams)
        p = self.args.params
        self.fps = p.fps
        if p.acoustic_model:  # GPU target: TensorRT engines of their own, called by BLS
            from talkserve.models.fastspeech2 import FastSpeech2TTS

            self.tts = FastSpeech2TTS(_bls(p.acoustic_model, spec.acoustic().output_names()),
                                      _bls(p.vocoder_model, spec.vocoder().output_names()), p.sample_rate)
        else:
            self.tts = load_voice(self.args.files, p)
        self.turns = Turns()
        self.metrics = Metrics(self.args.name)
        self.rtf = self.metrics.histogram("talkserve_tts_real_time_factor", "Synthesis seconds per second of speech",
                                          [0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2])
        self.spoken = self.metrics.counter("talkserve_tts_audio_seconds_total", "Seconds of speech synthesised")

    def _run(self, request):
        text = decode_text(scalar_bytes(request, "reply_text"), field="reply_text")
        emotion = parse_emotion(scalar_bytes(request, "emotion"))
        turn = scalar_bytes(request, "turn").decode()
        start = time.monotonic()
        # A superseded reply (barge-in) gets no speech, so lipsync draws nothing for it.
        current = self.turns.is_current(turn)
        speech = self.tts.synthesize(text, style(emotion)) if current else np.zeros(0, np.float32)
        seconds = len(speech) / self.tts.sample_rate
        if seconds:
            self.rtf.observe((time.monotonic() - start) / seconds)
            self.spoken.increment(seconds)
        audio = pad_to_frames(speech, self.tts.sample_rate, self.fps)
        return [pb_utils.Tensor("audio", audio.astype(np.float32)),
                pb_utils.Tensor("sample_rate", np.array([self.tts.sample_rate], np.int32))]

    def execute(self, requests):
        return run_each(requests, self._run, self.metrics)


def _bls(model: str, outputs: list[str]):
    return lambda feeds: list(bls(model, feeds, outputs).values())
