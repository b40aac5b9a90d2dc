"""Triton python model `lipsync` (decoupled): a sentence's audio → portrait frames with a speaking
mouth, streamed in parts, each response carrying exactly the audio its frames show.

kind `wav2lip`: the generator is the `wav2lip` model, called through BLS so the same code drives an
ONNX Runtime session (CPU) or a TensorRT engine (GPU). kind `warp`: the procedural landmark-driven
mouth, computed here (no model, hundreds of frames/s).
"""

import time

import numpy as np
import triton_python_backend_utils as pb_utils

from talkserve.admission import Streams
from talkserve.avatars import AvatarError, AvatarStore
from talkserve.emotion import grade_frames, parse_emotion, style
from talkserve.lipsync import animate, animate_warp
from talkserve.lipsync.warp import WarpConfig, WarpRig
from talkserve.paths import avatar_db
from talkserve.serving.triton import Metrics, ModelArgs, bls, optional_input, scalar_bytes, stream_each
from talkserve.text import RequestError
from talkserve.turns import Turns


def wav2lip(mel: np.ndarray, face: np.ndarray) -> np.ndarray:
    return bls("wav2lip", {"mel": mel, "face": face}, ["frames"])["frames"]


class Stopped(Exception):
    """The request was cancelled, or superseded by a newer turn of its conversation (barge-in)."""


class TritonPythonModel:
    def initialize(self, args):
        self.args = ModelArgs(args)
        p = self.args.params
        self.store = AvatarStore(avatar_db(p.get("avatar_db")), read_only=True)
        self.turns = Turns()
        self.streams = Streams(lease_seconds=float(p.get("stream_lease_seconds", "60")))
        self.fps = float(p["fps"])
        self.kind = p.get("kind", "wav2lip")
        self.warp = WarpConfig.model_validate_json(p["warp"]) if "warp" in p else WarpConfig()
        self.rigs: dict[str, tuple[object, WarpRig]] = {}  # avatar id → (the Avatar it was built for, rig)
        self.first_part, self.part = int(p["first_part_frames"]), int(p["part_frames"])
        m = self.metrics = Metrics(self.args.name)
        self.frames = m.counter("talkserve_lipsync_frames_total", "Video frames generated")
        self.fps_hist = m.histogram("talkserve_lipsync_frames_per_second",
                                    "Frames per second of lip-sync compute, per part", [5, 10, 15, 25, 50, 100, 200])
        self.chunks = m.counter("talkserve_chunks_streamed_total", "Responses streamed to clients")
        self.ttfc = m.histogram("talkserve_time_to_first_chunk_seconds", "Request to its first streamed chunk",
                                [0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10])

    def _rig(self, avatar) -> WarpRig:
        cached = self.rigs.get(avatar.id)
        if cached is None or cached[0] is not avatar:  # the store hands out a new Avatar when it changed
            cached = self.rigs[avatar.id] = (avatar, WarpRig(avatar.portrait, avatar.landmarks, self.warp))
        return cached[1]

    def _stream(self, request, sender) -> None:
        stream = scalar_bytes(request, "stream").decode()
        try:
            self._draw(request, sender, stream)
        finally:  # drawn, stopped, silent or failed: this sentence no longer holds the stream open
            self.streams.done(stream, int(optional_input(request, "chunk_index")[0]))

    def _draw(self, request, sender, stream: str) -> None:
        text = optional_input(request, "reply_text")
        index = optional_input(request, "chunk_index").astype(np.int32)
        audio = optional_input(request, "audio").astype(np.float32)
        sr = optional_input(request, "sample_rate").astype(np.int32)
        avatar_id = scalar_bytes(request, "avatar_id").decode("utf-8", "replace")
        started_at = float(optional_input(request, "started_at")[0])
        look = style(parse_emotion(scalar_bytes(request, "emotion")))
        turn = scalar_bytes(request, "turn").decode()
        user_text = pb_utils.Tensor("user_text", optional_input(request, "user_text"))
        try:
            avatar = self.store.get(avatar_id)
        except AvatarError as e:
            raise RequestError("avatar_id", str(e)) from None
        if audio.size == 0:  # tts spoke nothing: the reply was superseded before it (barge-in)
            return

        def live() -> bool:
            return not request.is_cancelled() and self.turns.is_current(turn)

        def generate(mel, face):  # checked before each part's compute, so a stop wastes none
            if not live():
                raise Stopped
            return wav2lip(mel, face)

        computed = time.monotonic()
        if self.kind == "warp":
            parts = animate_warp(audio, int(sr[0]), self._rig(avatar), self.fps, self.first_part, self.part)
        else:
            parts = animate(audio, int(sr[0]), avatar, generate, self.fps, self.first_part, self.part)
        try:
            for part in parts:
                if not live():
                    return
                self.fps_hist.observe(len(part.frames) / max(time.monotonic() - computed, 1e-6))
                self.frames.increment(len(part.frames))
                if index[0] == 0 and part.index == 0:
                    self.ttfc.observe(time.time() - started_at)
                self.streams.touch(stream)
                sender.send(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("reply_text", text), pb_utils.Tensor("chunk_index", index),
                    pb_utils.Tensor("part_index", np.array([part.index], np.int32)),
                    pb_utils.Tensor("audio", part.audio), pb_utils.Tensor("sample_rate", sr),
                    pb_utils.Tensor("video", grade_frames(part.frames, avatar.box, look)), user_text,
                ]))
                self.chunks.increment(1)
                computed = time.monotonic()
        except Stopped:
            return

    def execute(self, requests):
        stream_each(requests, self._stream, self.metrics)
