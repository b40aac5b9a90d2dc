"""Triton python model `admit`: talking_head's first step. A new reply takes one of the server's
`max_streams` slots (talkserve.runtime.admission) or is refused at once — while draining with UNAVAILABLE,
when full with the stream-limit message (clients: RESOURCE_EXHAUSTED) — so admitted replies keep
their pace instead of every reply getting late. Its `stream` id travels with the reply; `lipsync`
ends the stream when the last sentence is drawn."""

import threading

from talkserve.runtime.drain import refuse_if_draining
from talkserve.serving.triton import Metrics, ModelArgs, StreamGate, run_each, string_tensor
from talkserve.spec import AdmitParams


class TritonPythonModel:
    def initialize(self, args):
        self.args = ModelArgs(args, AdmitParams)
        m = self.metrics = Metrics(self.args.name)
        self.gate = StreamGate(self.args.params, m)
        self.streams = self.gate.streams
        m.gauge("talkserve_streams_capacity", "Replies this server runs at once (serving.max_streams)").set(
            self.gate.limit)
        self.active = m.gauge("talkserve_streams_active", "Replies running now (admitted, last sentence not drawn)")
        self.active.set(0)
        # Streams end in lipsync, another process, and voice replies are admitted by asr: the gauge
        # (all of them) is re-read from the leases here.
        self.stopped = threading.Event()
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watcher.start()

    def _watch(self):
        while not self.stopped.wait(0.5):
            self.active.set(self.streams.active())

    def _run(self, request):
        refuse_if_draining()
        stream = self.gate.admit(request)
        self.active.set(self.streams.active())
        return [string_tensor("stream", stream)]

    def execute(self, requests):
        return run_each(requests, self._run, self.metrics)

    def finalize(self):
        self.stopped.set()
