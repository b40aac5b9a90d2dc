"""Glue shared by the python models; imported only inside Triton's python backend stub."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import triton_python_backend_utils as pb_utils

from talkserve.runtime.admission import Overloaded, Streams
from talkserve.runtime.drain import Draining
from talkserve.spec import AdmitParams, Params
from talkserve.text import RequestError

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
P = TypeVar("P", bound=Params)


class ModelArgs(Generic[P]):
    """What `initialize` gets, parsed once: the config (the truth), its parameters (the model's
    `talkserve.spec` Params class), our files."""

    def __init__(self, args: dict, params: type[P]):
        self.config = json.loads(args["model_config"])
        self.name = args["model_name"]
        self.params: P = params.from_config(self.config)
        self.files = Path(args["model_repository"]) / args["model_version"]


def apply_cpu_nice(nice: int) -> None:
    """Lower this stub's CPU priority (call before creating thread pools: Linux niceness is per
    thread, inherited by threads created afterwards)."""
    if nice:
        os.nice(nice)


class Metrics:
    """Custom Prometheus metrics of one model (pb_utils.MetricFamily), created once in initialize.

    Families must outlive their metrics, so both live here. Instances of a model share a series
    (same name and labels), which is what counters, gauges changed by ±1, and histograms want.
    """

    def __init__(self, model: str):
        self.labels = {"model": model}
        self.families: list = []
        # Triton 2.51 counts none of a python model's error responses in nv_inference_request_failure
        # (measured: bad input, core dtype rejections and cancellations all left it at 0), so the
        # failure-ratio alert reads this.
        self.errors = self.counters_by(
            "talkserve_request_errors_total",
            "Requests answered with an error, by kind (invalid input, internal, refused while draining, "
            "refused at the stream limit)",
            "kind", ["invalid", "internal", "unavailable", "overloaded"])
        # What `talkserve drain` waits for (with Triton's pending count) before the server stops.
        self.executing = self.gauge("talkserve_requests_executing", "Requests this model is executing now")

    def _family(self, name: str, description: str, kind):
        family = pb_utils.MetricFamily(name=name, description=description, kind=kind)
        self.families.append(family)
        return family

    def _metric(self, name: str, description: str, kind, **kw):
        return self._family(name, description, kind).Metric(labels=self.labels, **kw)

    def counter(self, name: str, description: str):
        return self._metric(name, description, pb_utils.MetricFamily.COUNTER)

    def counters_by(self, name: str, description: str, label: str, values: list[str]) -> dict:
        """One counter family, one series per label value (e.g. rejected requests by field)."""
        family = self._family(name, description, pb_utils.MetricFamily.COUNTER)
        return {v: family.Metric(labels={**self.labels, label: v}) for v in values}

    def gauge(self, name: str, description: str):
        return self._metric(name, description, pb_utils.MetricFamily.GAUGE)

    def histogram(self, name: str, description: str, buckets: list[float]):
        return self._metric(name, description, pb_utils.MetricFamily.HISTOGRAM, buckets=buckets)


class StreamGate:
    """Admission at a reply's entry model (`admit` for text, `asr` for voice): a slot of the
    server's `max_streams` (talkserve.runtime.admission, shared by both through the server's scratch) or
    Overloaded at once; counted as admitted/refused under the entry model's name."""

    def __init__(self, params: AdmitParams, metrics: Metrics):
        self.limit = params.max_streams
        self.streams = Streams(lease_seconds=params.stream_lease_seconds)
        self.refused = metrics.counter("talkserve_streams_refused_total", "Replies refused because the server was full")
        self.admitted = metrics.counter("talkserve_streams_admitted_total", "Replies admitted")

    def admit(self, request) -> str:
        """The request's stream id (its conversation, if named, may barge in on its own slot)."""
        # Only a key here: llm validates the field (and counts a bad one by name).
        named = optional_input(request, "conversation_id") is not None
        conversation = scalar_bytes(request, "conversation_id").decode("utf-8", "replace") if named else ""
        try:
            stream = self.streams.admit(self.limit, conversation)
        except Overloaded:
            self.refused.increment(1)
            raise
        self.admitted.increment(1)
        return stream


def string_tensor(name: str, value: str):
    return pb_utils.Tensor(name, np.array([value.encode()], dtype=np.object_))


def optional_input(request, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def scalar_bytes(request, name: str) -> bytes:
    """The single BYTES element of a [1] input; shape is already checked by Triton."""
    return bytes(optional_input(request, name).reshape(-1)[0])


def bls(model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    """Synchronous BLS call that raises on the error of the response it just got."""
    request = pb_utils.InferenceRequest(
        model_name=model, requested_output_names=outputs,
        inputs=[pb_utils.Tensor(name, value) for name, value in inputs.items()],
    )
    response = request.exec()
    if response.has_error():
        raise pb_utils.TritonModelException(f"{model}: {response.error().message()}")
    return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs}


def error_response(err: Exception, metrics: Metrics | None = None) -> pb_utils.InferenceResponse:
    """RequestError → INVALID_ARGUMENT naming the field, Draining and Overloaded → UNAVAILABLE (the
    client retries elsewhere); anything else → INTERNAL. Counted by kind."""
    kind, code, message = "internal", pb_utils.TritonError.INTERNAL, f"{type(err).__name__}: {err}"
    if isinstance(err, RequestError):
        kind, code, message = "invalid", pb_utils.TritonError.INVALID_ARG, str(err)
    elif isinstance(err, Draining):
        kind, code, message = "unavailable", pb_utils.TritonError.UNAVAILABLE, str(err)
    elif isinstance(err, Overloaded):  # Triton has no RESOURCE_EXHAUSTED; the client reads the message
        kind, code, message = "overloaded", pb_utils.TritonError.UNAVAILABLE, str(err)
    if metrics is not None:
        metrics.errors[kind].increment(1)
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


@contextlib.contextmanager
def executing(metrics: Metrics | None):
    if metrics is None:
        yield
        return
    metrics.executing.increment(1)
    try:
        yield
    finally:
        metrics.executing.increment(-1)


def run_each(requests, handle, metrics: Metrics | None = None) -> list:
    """Non-decoupled execute: one response per request, bad requests fail alone."""
    responses = []
    for request in requests:
        try:
            with executing(metrics):
                responses.append(pb_utils.InferenceResponse(output_tensors=handle(request)))
        except Exception as e:  # every error must reach its own request, not fail the batch
            responses.append(error_response(e, metrics))
    return responses


def _respond(request, handle, metrics: Metrics | None, ipc=None) -> None:
    with ipc or contextlib.nullcontext():
        sender = request.get_response_sender()
        try:
            with executing(metrics):
                handle(request, sender)
        except Exception as e:  # the client must get the error, not a stream that never ends
            sender.send(error_response(e, metrics), flags=FINAL)
            return
        sender.send(flags=FINAL)


@contextlib.contextmanager
def released(lock: threading.RLock):
    """Let go of `lock` (held once by this thread) for work that does not talk to the server."""
    lock.release()
    try:
        yield
    finally:
        lock.acquire()


def stream_each(requests, handle, metrics: Metrics | None = None) -> None:
    """Decoupled execute: `handle(request, sender)` sends any number of responses; we close the
    stream with the final flag, or with the error when it raises."""
    for request in requests:
        _respond(request, handle, metrics)


def stream_each_on_threads(requests, handle, metrics: Metrics | None, ipc: threading.RLock) -> None:
    """As `stream_each`, each request on a thread of its own: execute returns at once, so this one
    instance takes the next requests while these run (a decoupled model may answer from any thread).

    Each thread holds `ipc` except where it lets go (`released`) for pure compute: everything that
    talks to the server (sends, BLS calls, is_cancelled, metrics, logs) runs one at a time. The
    python backend's shared memory is not safe under concurrent use: with eight streams' sends and
    BLS calls at once, 2.51 aborted with std::bad_alloc (measured here; the same crash under
    concurrent BLS load is open upstream, triton-inference-server/server#8882). `lipsync`'s
    generator call stays under it too: run beside the sends (one call at a time), it left a text
    reply unfinished at shutdown in two of two runs of the admission tests (exit timeout), and none
    with it held.
    """
    for request in requests:
        threading.Thread(target=_respond, args=(request, handle, metrics, ipc), daemon=True).start()
