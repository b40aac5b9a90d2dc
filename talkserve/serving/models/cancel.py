"""Triton python model `cancel`: stop a reply — the one a conversation has streaming (barge-in
without a new utterance), or the one streamed under a flow whose reader left (talkserve.runtime.receipts).
The llm loop, tts and lipsync see a cancelled turn at their next check (talkserve.runtime.turns); lipsync
sees a reader gone before it computes the flow's next part."""

import numpy as np
import triton_python_backend_utils as pb_utils

from talkserve.runtime.receipts import Receipts
from talkserve.runtime.turns import Turns
from talkserve.serving.triton import Metrics, ModelArgs, optional_input, run_each, scalar_bytes
from talkserve.spec import NoParams
from talkserve.text import RequestError, decode_text


class TritonPythonModel:
    def initialize(self, args):
        self.turns, self.receipts = Turns(), Receipts()
        model = ModelArgs(args, NoParams)
        self.metrics = Metrics(model.name)
        # What TalkserveModelNotReady compares Triton's per-model series with: every model of the
        # repository this server serves (Triton has no "models expected" metric of its own).
        repository = model.files.parent.parent
        self.expected = self.metrics.gauge("talkserve_repository_models", "Models in the repository this server serves")
        self.expected.set(sum(1 for d in repository.iterdir() if (d / "config.pbtxt").is_file()))

    def _run(self, request):
        named = {name: decode_text(scalar_bytes(request, name), name, 128)
                 for name in ("conversation_id", "receipts") if optional_input(request, name) is not None}
        if not named:
            raise RequestError("conversation_id", "missing: name the reply to stop by its conversation_id "
                                                  "or by its receipts flow")
        if "conversation_id" in named:
            self.turns.cancel(named["conversation_id"])
        if "receipts" in named:
            self.receipts.leave(named["receipts"])
        return [pb_utils.Tensor("cancelled", np.array([True]))]

    def execute(self, requests):
        return run_each(requests, self._run, self.metrics)
