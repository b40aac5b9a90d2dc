"""Triton python model `ack`: a client's read receipt — it has taken `parts` parts of the reply it
streams under the flow `receipts` (talkserve.receipts). `lipsync` computes that flow's next part
only while fewer than its window are unread, so a reader that stops reading holds a bounded amount."""

import numpy as np
import triton_python_backend_utils as pb_utils

from talkserve.receipts import Receipts
from talkserve.serving.triton import Metrics, ModelArgs, optional_input, run_each, scalar_bytes
from talkserve.spec import NoParams
from talkserve.text import RequestError, decode_text


class TritonPythonModel:
    def initialize(self, args):
        self.receipts = Receipts()
        self.metrics = Metrics(ModelArgs(args, NoParams).name)

    def _run(self, request):
        flow = decode_text(scalar_bytes(request, "receipts"), "receipts", 128)
        parts = int(optional_input(request, "parts").reshape(-1)[0])
        if parts < 0:
            raise RequestError("parts", f"{parts} is negative")
        self.receipts.acknowledge(flow, parts)
        return [pb_utils.Tensor("acknowledged", np.array([True]))]

    def execute(self, requests):
        return run_each(requests, self._run, self.metrics)
