"""Triton python model `admit`: talking_head's first step. A new reply takes one of the server's
`max_streams` slots (talkserve.admission) or is refused at once — while draining with UNAVAILABLE,
when full with the stream-limit message (clients: RESOURCE_EXHAUSTED) — so admitted replies keep
their pace instead of every reply getting late. Its `stream` id travels with the reply; `lipsync`
ends the stream when the last sentence is drawn."""

import threading

import numpy as np
import triton_python_backend_utils as pb_utils

from talkserve.admission import Overloaded, Streams
from talkserve.drain import refuse_if_draining
from talkserve.serving.triton import Metrics, ModelArgs, optional_input, run_each
from talkserve.spec import AdmitParams


class TritonPythonModel:
    def initialize(self, args):
        self.args = ModelArgs(args, AdmitParams)
        p = self.args.params
        self.limit = p.max_streams
        self.streams = Streams(lease_seconds=p.stream_lease_seconds)
        m = self.metrics = Metrics(self.args.name)
        m.gauge("talkserve_streams_capacity", "Replies this server runs at once (serving.max_streams)").set(self.limit)
        self.refused = m.counter("talkserve_streams_refused_total", "Replies refused because the server was full")
        self.admitted = m.counter("talkserve_streams_admitted_total", "Replies admitted")
        self.active = m.gauge("talkserve_streams_active", "Replies running now (admitted, last sentence not drawn)")
        self.active.set(0)
        # Streams end in lipsync, another process: the gauge is re-read from the leases here.
        self.stopped = threading.Event()
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watcher.start()

    def _watch(self):
        while not self.stopped.wait(0.5):
            self.active.set(self.streams.active())

    def _run(self, request):
        refuse_if_draining()
        conversation = optional_input(request, "conversation_id")
        # Only a key here: llm validates the field (and counts a bad one by name).
        conversation = "" if conversation is None else bytes(conversation.reshape(-1)[0]).decode("utf-8", "replace")
        try:
            stream = self.streams.admit(self.limit, conversation)
        except Overloaded:
            self.refused.increment(1)
            raise
        self.admitted.increment(1)
        self.active.set(self.streams.active())
        return [pb_utils.Tensor("stream", np.array([stream.encode()], dtype=np.object_))]

    def execute(self, requests):
        return run_each(requests, self._run, self.metrics)

    def finalize(self):
        self.stopped.set()
