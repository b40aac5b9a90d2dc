"""Thin streaming gRPC client for the `talking_head` and `talking_head_voice` ensembles (tritonclient).

    with TalkClient("127.0.0.1:8001") as client:
        for chunk in client.stream("Hello!", avatar_id="sample"):
            ...  # chunk.text, chunk.audio (float32 @ chunk.sample_rate), chunk.video (n, H, W, 3)
        for chunk in client.stream_voice(pcm, 16000, avatar_id="sample", emotion="happy"):
            ...  # chunk.user_text: what the server heard

Barge-in: give requests a `conversation_id`; a new request in the same conversation supersedes
the reply still streaming, and `cancel(conversation_id)` stops it without a new one. Turns live in
one replica: every call carries the id as the `conversation-id` header, which the router in
k8s/base/router.yaml hashes so a conversation's requests (and its cancel) reach the same replica.
A request the server could not take (a draining replica: UNAVAILABLE) is retried on a new
connection, so a client behind a per-connection balancer lands on another replica.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
from prometheus_client import Counter, Histogram
from tritonclient.utils import InferenceServerException

from talkserve import spec
from talkserve.client.chunk import Chunk
from talkserve.client.conversation import Conversation
from talkserve.client.inputs import History, _array_input, _bytes_input, request_inputs, voice_inputs
from talkserve.text import DRAINING_MESSAGE as DRAINING
from talkserve.text import OVERLOADED_MESSAGE as OVERLOADED
from talkserve.video_codec import H264Decoder

__all__ = [
    "MAX_RECEIVE_BYTES",
    "MODEL",
    "NO_RETRY",
    "OUTPUTS",
    "RECEIPT",
    "VOICE_MODEL",
    "VOICE_OUTPUTS",
    "Chunk",
    "RetryPolicy",
    "TalkClient",
    "TalkError",
    "request_inputs",
    "stream_error_status",
    "voice_inputs",
]

MODEL = spec.TALKING_HEAD.name
VOICE_MODEL = spec.TALKING_HEAD_VOICE.name
# Ask Triton to end a failed stream with a real gRPC status. Off by default: tritonserver 2.51 (the
# embedded default) can segfault in that path (gRPC cancellation race, fixed in 25.x by server
# PRs #7840/#8078); turn it on for NGC 25.x images.
GRPC_ERROR_HEADERS = {"triton_grpc_error": "true"}
CONVERSATION_HEADER = "conversation-id"
ADMIN_HEADER = "talkserve-admin-key"  # talkserve.server.serve.ADMIN_HEADER (the client does not import the server)
RECEIPT = "talkserve-receipt"  # request id of the receipts sent on a reply's stream
OUTPUTS = tuple(spec.TALKING_HEAD.output_names())  # what each streamed response carries
VOICE_OUTPUTS = tuple(spec.TALKING_HEAD_VOICE.output_names())  # and what the server heard

# Client-side view for the backend services that embed this library (expose the default registry,
# e.g. prometheus_client.start_http_server): what their users wait for, network included.
REQUESTS = Counter("talkserve_client_requests_total", "Streams ended, by model and gRPC status", ["model", "status"])
FIRST_CHUNK = Histogram("talkserve_client_time_to_first_chunk_seconds", "Request sent → first chunk received",
                        ["model"], buckets=(0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10))
CHUNKS = Counter("talkserve_client_chunks_total", "Chunks received", ["model"])


@dataclass(frozen=True)
class RetryPolicy:
    """Retry a request that the server could not take (gRPC UNAVAILABLE / RESOURCE_EXHAUSTED) with
    exponential backoff and full jitter; never a stream that already delivered a chunk."""

    attempts: int = 4
    initial_backoff_s: float = 0.25
    max_backoff_s: float = 4.0
    multiplier: float = 2.0
    retry_on: tuple[str, ...] = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The sleeps before attempts 2..n: uniform in [0, min(max, initial·multiplierᵏ)]."""
        rng = rng or random.Random()
        for k in range(self.attempts - 1):
            yield rng.uniform(0, min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**k))


NO_RETRY = RetryPolicy(attempts=1)
# Triton's gRPC server answers pings only every 5 min without data by default
# (--grpc-http2-min-recv-ping-interval-without-data=300000) and hangs up after 2 strikes.
KEEPALIVE = grpcclient.KeepAliveOptions(keepalive_time_ms=300_000, keepalive_timeout_ms=20_000,
                                        keepalive_permit_without_calls=False, http2_max_pings_without_data=2)
# A streamed part is raw video: 25 frames of 512×512 RGB ≈ 19.7 MB; 1024×1024 ≈ 79 MB.
MAX_RECEIVE_BYTES = 128 << 20
MAX_SEND_BYTES = 16 << 20  # the longest utterance: 30 s × 48 kHz × 4 B ≈ 5.8 MB


class TalkError(RuntimeError):
    """An error the server answered with; `status` is the gRPC status name (e.g. INVALID_ARGUMENT)."""

    def __init__(self, status: str, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status


# Without `triton_grpc_error` (see TalkClient) a stream error is a message with no gRPC code.
# These messages are bad-input errors: Triton core's own request checks (infer_request.cc:
# dtype, shape, missing/unknown input, byte size) and the contract's field checks, which the
# models raise as INVALID_ARG ("<field>: <problem>", see talkserve.text.RequestError).
_INVALID_ARG = re.compile(
    r"inference input '.*' data-type is|unexpected shape for input|expected number of inputs|"
    r"expected \d+ inputs? but got|unexpected inference input|byte size|"
    rf"(^|, )({'|'.join(spec.REQUEST_FIELDS)}): "
)


def stream_error_status(e: InferenceServerException) -> str:
    """gRPC status name of a stream error, restoring INVALID_ARGUMENT and UNAVAILABLE (a draining
    server, retried) where the transport dropped it. A server at its stream limit is RESOURCE_EXHAUSTED
    (retried): Triton has no such code, so it answers UNAVAILABLE with the limit's message."""
    message = e.message() or ""
    if OVERLOADED in message:
        return "RESOURCE_EXHAUSTED"
    if e.status():
        return e.status().removeprefix("StatusCode.")
    if DRAINING in message:
        return "UNAVAILABLE"
    return "INVALID_ARGUMENT" if _INVALID_ARG.search(message) else "UNKNOWN"


def _error(e: InferenceServerException) -> TalkError:
    return TalkError(stream_error_status(e), e.message() or str(e))


class TalkClient:
    def __init__(self, url: str = "127.0.0.1:8001", model: str = MODEL, ssl: bool = False,
                 root_certificates: str | None = None, private_key: str | None = None,
                 certificate_chain: str | None = None, grpc_error_codes: bool = False,
                 retry: RetryPolicy = RetryPolicy(), admin_key: str | None = None, receipts: bool = True):
        """`ssl` + `root_certificates` for TLS; add `private_key` + `certificate_chain` for mTLS.
        `admin_key` (default $TALKSERVE_ADMIN_KEY) opens the statistics a deployment restricts.
        `receipts` (on by default): acknowledge each chunk as it is taken from the stream, so the
        server computes at most `serving.unread_parts` parts ahead of this reader (and gives it up
        if it stops reading)."""
        self.model, self.retry, self.attempts, self.connections = model, retry, 0, 0
        self.receipts = receipts
        self.headers = dict(GRPC_ERROR_HEADERS) if grpc_error_codes else {}
        admin_key = admin_key or os.environ.get("TALKSERVE_ADMIN_KEY")
        # Triton reads a restricted gRPC protocol's key from "triton-grpc-protocol-<header>"
        self.admin_headers = {f"triton-grpc-protocol-{ADMIN_HEADER}": admin_key} if admin_key else None
        self._connect = lambda: grpcclient.InferenceServerClient(
            url, ssl=ssl, root_certificates=root_certificates, private_key=private_key,
            certificate_chain=certificate_chain, keepalive_options=KEEPALIVE,
            channel_args=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
                          ("grpc.max_send_message_length", MAX_SEND_BYTES)],
        )
        self.client = self._connect()
        self.connections = 1

    def reconnect(self) -> None:
        """A new channel (a new TCP connection): the old one may end on a replica that is draining."""
        with contextlib.suppress(Exception):
            self.client.close()
        self.client = self._connect()
        self.connections += 1

    def _headers(self, route: str | None) -> dict[str, str] | None:
        """`route`: the key the router keeps on one replica (a conversation, or one reply's flow)."""
        headers = {**self.headers, **({CONVERSATION_HEADER: route} if route else {})}
        return headers or None

    def stream(self, text: str | bytes, avatar_id: str | bytes, max_new_tokens: int | None = None,
               timeout: float = 600.0, emotion: str | None = None,
               conversation_id: str | None = None, history: History | None = None,
               video_codec: str | None = None, decode_video: bool = True) -> Iterator[Chunk]:
        """Yield each chunk as it arrives; raises TalkError on a server error. `history`: the earlier
        turns (the server keeps none; `conversation()` keeps them). `video_codec` "h264": the video
        travels as H.264 (`chunk.h264`, ~150× fewer bytes), decoded into `chunk.video` unless not `decode_video`."""
        inputs = request_inputs(text, avatar_id, max_new_tokens, emotion, conversation_id, history, video_codec)
        return self._retrying(lambda: self._stream(self.model, inputs, OUTPUTS, timeout, conversation_id,
                                                   decode_video))

    def stream_voice(self, audio: np.ndarray, sample_rate: int, avatar_id: str | bytes,
                     max_new_tokens: int | None = None, timeout: float = 600.0, emotion: str | None = None,
                     conversation_id: str | None = None, model: str = VOICE_MODEL,
                     history: History | None = None, video_codec: str | None = None,
                     decode_video: bool = True) -> Iterator[Chunk]:
        """As `stream`, from an utterance; each chunk's `user_text` is what the server heard."""
        inputs = voice_inputs(audio, sample_rate, avatar_id, max_new_tokens, emotion, conversation_id, history,
                              video_codec)
        return self._retrying(lambda: self._stream(model, inputs, VOICE_OUTPUTS, timeout, conversation_id,
                                                   decode_video))

    def _retrying(self, start) -> Iterator[Chunk]:
        delays = self.retry.delays()
        while True:
            delivered = False
            try:
                for chunk in start():
                    delivered = True
                    yield chunk
                return
            except TalkError as e:
                delay = None if delivered or e.status not in self.retry.retry_on else next(delays, None)
                if delay is None:
                    raise
                time.sleep(delay)
                self.reconnect()  # not the same channel: it may still be pinned to the replica that refused

    def cancel(self, conversation_id: str) -> None:
        """Stop the reply `conversation_id` has streaming (its stages stop at their next check)."""
        self._cancel(conversation_id, None)

    def _cancel(self, conversation_id: str | None, flow: str | None) -> None:
        """Stop a reply by its conversation and/or the flow this reader streamed it under (a reader
        that leaves says so: the server stops computing it now, not after `unread_timeout_s`)."""
        inputs = [_bytes_input(name, value) for name, value in [("conversation_id", conversation_id),
                                                                ("receipts", flow)] if value]
        try:
            self.client.infer("cancel", inputs, headers=self._headers(conversation_id or flow))
        except InferenceServerException as e:
            raise _error(e) from None

    def _acknowledge(self, flow: str, parts: int) -> None:
        """Tell the server this reader has taken `parts` parts: a request to `ack` on the reply's own
        stream, so it reaches the replica that streams it whatever a router does meanwhile
        (asynchronous; `ack` answers nothing, and anything it did answer is skipped by request id; a
        lost receipt is made up by the next)."""
        receipt = [_bytes_input("receipts", flow), _array_input("parts", np.array([parts], np.int64), "INT64")]
        with contextlib.suppress(InferenceServerException):
            self.client.async_stream_infer(spec.ACK.name, receipt, request_id=RECEIPT)

    def _stream(self, model: str, inputs, outputs, timeout: float,
                conversation_id: str | None = None, decode_video: bool = True) -> Iterator[Chunk]:
        results: queue.Queue = queue.Queue()
        decoder = None  # one per reply: its parts are one H.264 stream
        flow = uuid.uuid4().hex if self.receipts else None  # one per attempt: a retry starts a new reply
        if flow:
            inputs = [*inputs, _bytes_input("receipts", flow)]
        taken = 0
        # The routing key: the conversation, or this reply's flow, so its cancel reaches its replica.
        self.client.start_stream(callback=lambda result, error: results.put((time.monotonic(), result, error)),
                                 headers=self._headers(conversation_id or flow))
        cancelled = True  # unless the stream ends normally: an abandoned generator cancels its request
        status, first = "CANCELLED", True
        try:
            start = time.monotonic()
            self.attempts += 1
            try:
                self.client.async_stream_infer(
                    model, inputs, outputs=[grpcclient.InferRequestedOutput(n) for n in outputs],
                    enable_empty_final_response=True,
                )
            except InferenceServerException as e:  # the stream broke at once; its reason is in the callback
                try:
                    _, _, error = results.get(timeout=5)
                except queue.Empty:
                    error = None
                err = _error(error) if error is not None else TalkError("UNAVAILABLE", e.message() or str(e))
                status = err.status
                raise err from None
            while True:
                try:
                    at, result, error = results.get(timeout=max(0.0, start + timeout - time.monotonic()))
                except queue.Empty:
                    status = "DEADLINE_EXCEEDED"
                    raise TalkError(status, f"no response within {timeout:.0f}s") from None
                if error is not None:
                    err = _error(error)
                    status = err.status
                    raise err
                response = result.get_response()
                if response.id == RECEIPT:  # the answer to a receipt, not a part of the reply
                    continue
                final = response.parameters["triton_final_response"].bool_param
                if response.outputs:
                    if first:
                        FIRST_CHUNK.labels(model).observe(at - start)
                        first = False
                    CHUNKS.labels(model).inc()
                    if flow:
                        taken += 1
                        self._acknowledge(flow, taken)
                    video, h264 = result.as_numpy("video"), result.as_numpy("video_h264").tobytes()
                    if h264 and decode_video:
                        video = (decoder := decoder or H264Decoder()).decode(h264)
                    yield Chunk(
                        index=int(result.as_numpy("chunk_index")[0]),
                        part=int(result.as_numpy("part_index")[0]),
                        text=result.as_numpy("reply_text")[0].decode("utf-8"),
                        audio=result.as_numpy("audio"),
                        sample_rate=int(result.as_numpy("sample_rate")[0]),
                        video=video,
                        seconds=at - start,
                        user_text=(result.as_numpy("user_text")[0].decode("utf-8") if "user_text" in outputs
                                   else None),
                        h264=h264,
                    )
                if final:
                    cancelled, status = False, "OK"
                    return
        finally:
            self.client.stop_stream(cancel_requests=cancelled)
            if cancelled and (conversation_id or flow) and status not in ("INVALID_ARGUMENT", "UNAVAILABLE"):
                # Triton's cancel does not reach ensemble steps already running; the turn and the
                # flow do.
                with contextlib.suppress(TalkError):  # the server is gone: nothing left to stop
                    self._cancel(conversation_id, flow)
            REQUESTS.labels(model, status).inc()

    def conversation(self, avatar_id: str, conversation_id: str | None = None, history: History | None = None,
                     max_turns: int = 8):
        """A multi-turn conversation whose history this client keeps (talkserve.client.conversation)."""
        return Conversation(self, avatar_id, conversation_id, history, max_turns)

    def is_ready(self) -> bool:
        try:
            return self.client.is_server_ready() and self.client.is_model_ready(self.model)
        except InferenceServerException:
            return False

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> TalkClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
