"""Triton python model `tts`: one sentence of text → speech padded to whole video frames."""

import numpy as np
import triton_python_backend_utils as pb_utils

from talkserve.audio import pad_to_frames
from talkserve.models.piper_tts import PiperTTS
from talkserve.serving.triton import ModelArgs, run_each, scalar_bytes
from talkserve.text import decode_text


class TritonPythonModel:
    def initialize(self, args):
        self.args = ModelArgs(args)
        p = self.args.params
        self.fps = float(p["fps"])
        self.tts = PiperTTS(self.args.files / "voice.onnx", self.args.files / "voice.onnx.json",
                            length_scale=float(p["length_scale"]), noise_scale=float(p["noise_scale"]),
                            noise_w_scale=float(p["noise_w_scale"]), threads=int(p["intra_op_threads"]))

    def _run(self, request):
        text = decode_text(scalar_bytes(request, "reply_text"), field="reply_text")
        audio = pad_to_frames(self.tts.synthesize(text), self.tts.sample_rate, self.fps)
        return [pb_utils.Tensor("audio", audio.astype(np.float32)),
                pb_utils.Tensor("sample_rate", np.array([self.tts.sample_rate], np.int32))]

    def execute(self, requests):
        return run_each(requests, self._run)
