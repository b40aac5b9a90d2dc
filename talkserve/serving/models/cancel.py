"""Triton python model `cancel`: stop the reply a conversation has streaming (barge-in without a
new utterance). The llm loop, tts and lipsync see it at their next check (talkserve.turns)."""

import numpy as np
import triton_python_backend_utils as pb_utils

from talkserve.serving.triton import Metrics, ModelArgs, run_each, scalar_bytes
from talkserve.spec import NoParams
from talkserve.text import decode_text
from talkserve.turns import Turns


class TritonPythonModel:
    def initialize(self, args):
        self.turns = Turns()
        model = ModelArgs(args, NoParams)
        self.metrics = Metrics(model.name)
        # What TalkserveModelNotReady compares Triton's per-model series with: every model of the
        # repository this server serves (Triton has no "models expected" metric of its own).
        repository = model.files.parent.parent
        self.expected = self.metrics.gauge("talkserve_repository_models", "Models in the repository this server serves")
        self.expected.set(sum(1 for d in repository.iterdir() if (d / "config.pbtxt").is_file()))

    def _run(self, request):
        conversation = decode_text(scalar_bytes(request, "conversation_id"), "conversation_id", 128)
        self.turns.cancel(conversation)
        return [pb_utils.Tensor("cancelled", np.array([True]))]

    def execute(self, requests):
        return run_each(requests, self._run, self.metrics)
