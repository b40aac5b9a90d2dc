"""Triton python model `lipsync` (decoupled): a sentence's audio → portrait frames with Wav2Lip's
mouth, streamed in parts, each response carrying exactly the audio its frames show.

The generator is the `wav2lip` model, called through BLS so the same code drives an ONNX Runtime
session (CPU) or a TensorRT engine (GPU).
"""

import numpy as np
import triton_python_backend_utils as pb_utils

from talkserve.avatars import AvatarError, AvatarStore
from talkserve.lipsync import animate
from talkserve.serving.triton import ModelArgs, bls, optional_input, scalar_bytes, stream_each
from talkserve.text import RequestError


def wav2lip(mel: np.ndarray, face: np.ndarray) -> np.ndarray:
    return bls("wav2lip", {"mel": mel, "face": face}, ["frames"])["frames"]


class TritonPythonModel:
    def initialize(self, args):
        self.args = ModelArgs(args)
        p = self.args.params
        self.store = AvatarStore(p["avatar_db"])
        self.fps = float(p["fps"])
        self.first_part, self.part = int(p["first_part_frames"]), int(p["part_frames"])

    def _stream(self, request, sender) -> None:
        text = optional_input(request, "reply_text")
        index = optional_input(request, "chunk_index").astype(np.int32)
        audio = optional_input(request, "audio").astype(np.float32)
        sr = optional_input(request, "sample_rate").astype(np.int32)
        avatar_id = scalar_bytes(request, "avatar_id").decode("utf-8", "replace")
        try:
            avatar = self.store.get(avatar_id)
        except AvatarError as e:
            raise RequestError("avatar_id", str(e)) from None
        for part in animate(audio, int(sr[0]), avatar, wav2lip, self.fps, self.first_part, self.part):
            if request.is_cancelled():
                return
            sender.send(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("reply_text", text), pb_utils.Tensor("chunk_index", index),
                pb_utils.Tensor("part_index", np.array([part.index], np.int32)),
                pb_utils.Tensor("audio", part.audio), pb_utils.Tensor("sample_rate", sr),
                pb_utils.Tensor("video", part.frames),
            ]))

    def execute(self, requests):
        stream_each(requests, self._stream)
