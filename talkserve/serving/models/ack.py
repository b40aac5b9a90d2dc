"""Triton python model `ack` (decoupled, answers nothing): a client's read receipt — it has taken
`parts` parts of the reply it streams under the flow `receipts` (talkserve.runtime.receipts). `lipsync`
computes that flow's next part only while fewer than its window are unread, so a reader that stops
reading holds a bounded amount.

Receipts travel on the reply's own gRPC stream, and a response to one would be written on that
stream while lipsync writes the reply's parts: Triton 2.51's stream writer aborted the whole server
on such concurrent writes (`proto_buffer_writer.h: ASSERTION FAILED: !byte_buffer->Valid()`,
measured here through the router tests). So each request is closed with the final flag alone,
which the gRPC frontend does not write unless the client asked for empty final responses; a bad
receipt is counted and dropped (the next one makes up for a lost one).
"""

from talkserve.runtime.receipts import Receipts
from talkserve.serving.triton import FINAL, Metrics, ModelArgs, optional_input, scalar_bytes
from talkserve.spec import NoParams
from talkserve.text import RequestError, decode_text


class TritonPythonModel:
    def initialize(self, args):
        self.receipts = Receipts()
        self.metrics = Metrics(ModelArgs(args, NoParams).name)

    def _record(self, request) -> None:
        flow = decode_text(scalar_bytes(request, "receipts"), "receipts", 128)
        parts = int(optional_input(request, "parts").reshape(-1)[0])
        if parts < 0:
            raise RequestError("parts", f"{parts} is negative")
        self.receipts.acknowledge(flow, parts)

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                self._record(request)
            except Exception:  # nothing may be written back on the reply's stream: count it
                self.metrics.errors["invalid"].increment(1)
            sender.send(flags=FINAL)
