"""Triton python model `lipsync`: a sentence's audio → portrait frames with Wav2Lip's mouth.

The generator is the `wav2lip` model, called through BLS so the same code drives an ONNX Runtime
session (CPU) or a TensorRT engine (GPU).
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from talkserve.avatars import AvatarError, AvatarStore
from talkserve.lipsync import animate
from talkserve.serving.triton import ModelArgs, bls, optional_input, run_each, scalar_bytes
from talkserve.text import RequestError


def wav2lip(mel: np.ndarray, face: np.ndarray) -> np.ndarray:
    return bls("wav2lip", {"mel": mel, "face": face}, ["frames"])["frames"]


class TritonPythonModel:
    def initialize(self, args):
        self.args = ModelArgs(args)
        self.store = AvatarStore(self.args.params["avatar_db"])
        self.fps = float(self.args.params["fps"])
        self.batch = int(self.args.params["batch_size"])

    def _run(self, request):
        audio = optional_input(request, "audio").astype(np.float32)
        sr = int(optional_input(request, "sample_rate").reshape(-1)[0])
        avatar_id = scalar_bytes(request, "avatar_id").decode("utf-8", "replace")
        try:
            avatar = self.store.get(avatar_id)
        except AvatarError as e:
            raise RequestError("avatar_id", str(e)) from None
        frames = animate(audio, sr, avatar, wav2lip, self.fps, self.batch)
        return [pb_utils.Tensor("video", frames)]

    def execute(self, requests):
        return run_each(requests, self._run)
