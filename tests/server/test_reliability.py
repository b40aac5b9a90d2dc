"""Reliability against the real embedded tritonserver: floods of bad input, deadlines.

Bounded loops on loopback only."""

from __future__ import annotations

import itertools
import queue
import signal
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from helpers import metric, start_serve, streams_held, triton_under, wait_idle, wait_streams_free

from talkserve.client import TalkClient, TalkError, stream_error_status

pytestmark = pytest.mark.server


def tensor(name: str, values, datatype: str) -> grpcclient.InferInput:
    array = np.array(values, dtype=np.object_ if datatype == "BYTES" else None)
    t = grpcclient.InferInput(name, list(array.shape), datatype)
    t.set_data_from_numpy(array if datatype == "BYTES" else array.astype({"INT32": np.int32, "FP32": np.float32}
                                                                          [datatype]))
    return t


def good(name: str, value: bytes = b"Hi.") -> grpcclient.InferInput:
    return tensor(name, [value], "BYTES")


# (model, inputs, a piece of the message, which model refuses it: None = Triton core)
MALFORMED = [
    ("talking_head", lambda: [tensor("text", [7], "INT32"), good("avatar_id", b"sample")], "data-type", None),
    ("talking_head", lambda: [tensor("text", [b"a", b"b"], "BYTES"), good("avatar_id", b"sample")], "shape", None),
    ("talking_head", lambda: [good("text")], "avatar_id", None),
    ("talking_head", lambda: [good("text"), good("avatar_id", b"sample"), good("colour", b"red")], "colour", None),
    ("no_such_model", lambda: [good("text")], "no_such_model", None),
    ("talking_head", lambda: [good("text", b"a" * 5000), good("avatar_id", b"sample")], "text: is 5000", "llm"),
    ("talking_head", lambda: [good("text", b"\xff\xfe"), good("avatar_id", b"sample")], "text: not valid UTF-8",
     "llm"),
    ("talking_head", lambda: [good("text"), good("avatar_id", b"ghost")], "avatar_id: 'ghost'", "llm"),
    ("talking_head_voice", lambda: [tensor("user_audio", [np.nan] * 160, "FP32"),
                                    tensor("user_sample_rate", [16000], "INT32"), good("avatar_id", b"sample")],
     "audio: contains NaN", "asr"),
]


def test_a_thousand_malformed_requests_each_get_a_clean_error(server, url):
    """Every one refused as invalid input, the server ready after all, and our error counters up by
    exactly the requests that reached a model (Triton 2.51's own failure counter moves for none).

    One request per stream, as the client library sends them: pipelining hundreds of failing
    requests on one stream aborts tritonserver 2.51 (gRPC `proto_buffer_writer.h` assertion,
    measured here), an embedded-server hazard the NGC 25.x image does not share."""
    sent = {"llm": 0, "asr": 0}
    errors_before = {m: metric(server, "talkserve_request_errors_total", kind="invalid", model=m) for m in sent}
    client = grpcclient.InferenceServerClient(url)
    start = time.monotonic()
    try:
        for _, (model, inputs, piece, refuser) in zip(range(1000), itertools.cycle(MALFORMED), strict=False):
            errors: queue.Queue = queue.Queue()
            client.start_stream(callback=lambda result, error, q=errors: q.put(error))
            try:
                client.async_stream_infer(model, inputs())
                error = errors.get(timeout=30)
            finally:
                client.stop_stream()
            assert error is not None and piece in error.message(), (model, error)
            if model != "no_such_model":
                assert stream_error_status(error) == "INVALID_ARGUMENT", error.message()
            if refuser:
                sent[refuser] += 1
    finally:
        client.close()
    print(f"1000 malformed requests in {time.monotonic() - start:.1f}s")
    time.sleep(1)
    for model, n in sent.items():
        assert metric(server, "talkserve_request_errors_total", kind="invalid", model=model) \
            - errors_before[model] == n, model
    with TalkClient(url) as c:
        assert c.is_ready()
        assert list(c.stream("Thanks.", "sample", max_new_tokens=6))  # and it still answers


def test_deadline_shorter_than_the_reply(server, url):
    with TalkClient(url) as client, pytest.raises(TalkError) as e:
        list(client.stream("How does this work?", "sample", timeout=0.5))
    assert e.value.status == "DEADLINE_EXCEEDED"
    # The client says it left (cancel with its receipts flow): the slot is free in seconds, not
    # held until the server gives the silent reader up (unread_timeout_s, 10 s).
    freed = wait_streams_free(server, 3.0)
    print(f"deadline → slot free in {freed:.2f}s")
    deadline = time.monotonic() + 30  # the cancelled reply's remaining steps are dropped or finish
    while metric(server, "nv_inference_pending_request_count") > 0:
        assert time.monotonic() < deadline, "requests still pending 30 s after the deadline"
        time.sleep(0.2)


def test_abandoning_a_stream_stops_the_server_work_within_two_seconds(server, url):
    """stop_stream(cancel_requests=True) alone cannot stop ensemble steps already running (Triton
    server issue #6739); with a conversation_id the client also cancels the turn."""
    with TalkClient(url) as client:
        reply = client.stream("How does this work?", "sample", conversation_id="abandon-1")
        next(reply)
        reply.close()  # the generator's finally: stop_stream(cancel_requests=True) + cancel
    wait_idle(server, 2.0)
    frames = metric(server, "talkserve_lipsync_frames_total")
    time.sleep(1.0)
    assert metric(server, "talkserve_lipsync_frames_total") - frames <= 25  # no new sentence drawn


def test_closing_a_reply_outside_any_conversation_stops_it_and_frees_its_slot(server, url):
    """No conversation to cancel: the flow the reader streamed under names the reply instead."""
    with TalkClient(url) as client:
        reply = client.stream("How does this work?", "sample")
        next(reply)
        assert streams_held(server) == 1
        reply.close()
    freed = wait_streams_free(server, 3.0)
    wait_idle(server, 2.0)
    frames = metric(server, "talkserve_lipsync_frames_total")
    time.sleep(1.0)
    assert metric(server, "talkserve_lipsync_frames_total") - frames <= 25  # no new sentence drawn
    print(f"closed → slot free in {freed:.2f}s")


SOAK_SECONDS = 120
QUESTIONS = ["Hello!", "Tell me a joke.", "What can you do?", "Who are you?"]


def complete_and_in_order(chunks) -> bool:
    """Sentences 0..n, each with parts 0..k, in that order, every part's audio matching its frames."""
    order = [(c.index, c.part) for c in chunks]
    expected, sentence, part = [], 0, 0
    for index, p in order:
        if index == sentence + 1 and p == 0:
            sentence, part = index, 0
        expected.append((sentence, part))
        part += 1
    audio_ok = all(abs(len(c.audio) - len(c.video) * c.sample_rate / 25) < c.sample_rate / 25 for c in chunks)
    return bool(chunks) and order == expected and audio_ok


def test_eight_streams_for_two_minutes(server, url):
    # Eight streams on an otherwise idle server: a reader an earlier test left without a word holds
    # its slot until the server gives it up (unread_timeout_s).
    wait_streams_free(server, 30.0)
    end = time.monotonic() + SOAK_SECONDS
    replies, failures = [], []

    def talk(i: int) -> None:
        with TalkClient(url) as client:
            for n in itertools.count():
                if time.monotonic() > end:
                    return
                try:
                    chunks = list(client.stream(QUESTIONS[(i + n) % len(QUESTIONS)], "sample"))
                except TalkError as e:
                    failures.append(e)
                    return
                replies.append(complete_and_in_order(chunks))

    threads = [threading.Thread(target=talk, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(SOAK_SECONDS + 600)
    print(f"soak: {len(replies)} replies on 8 streams in {SOAK_SECONDS}s, {len(failures)} failures")
    assert not failures and len(replies) >= 8 and all(replies)


def test_sigterm_lets_replies_in_flight_finish_and_refuses_new_ones(built):
    """`talkserve serve` on SIGTERM: the reply under way streams to its end (the same reply as before),
    a new request gets UNAVAILABLE (which clients retry elsewhere), the readiness probe fails, and the
    process exits 0 within the exit timeout. Triton 2.51's own SIGTERM would cut the stream."""
    from talkserve.client import NO_RETRY
    from talkserve.runtime.drain import is_draining
    from talkserve.server.health import problems
    from talkserve.server.serve import Ports

    _, current = built
    ports, exit_timeout = Ports.free(), 30
    serve = start_serve(current, ports, "--exit-timeout", str(exit_timeout))
    url, question = f"127.0.0.1:{ports.grpc}", "Tell me a joke."
    try:
        triton = triton_under(serve)
        with TalkClient(url) as client:
            reference = [(c.index, c.text) for c in client.stream(question, "sample")]
        chunks, failure, first = [], [], threading.Event()

        def in_flight():
            try:
                with TalkClient(url, retry=NO_RETRY) as client:
                    for c in client.stream(question, "sample"):
                        chunks.append(c)
                        first.set()
            except TalkError as e:
                failure.append(e)
                first.set()

        reply = threading.Thread(target=in_flight)
        reply.start()
        assert first.wait(120) and not failure, failure
        serve.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        while not is_draining(triton):
            assert time.monotonic() - signalled < 5, "serve did not start draining"
            time.sleep(0.05)
        assert problems(url, current, triton) == ["server is draining for shutdown"]
        with TalkClient(url, retry=NO_RETRY) as client, pytest.raises(TalkError) as refused:
            list(client.stream("Hello!", "sample"))
        assert refused.value.status == "UNAVAILABLE", refused.value
        reply.join(120)
        code = serve.wait(exit_timeout + 10)
        stopped = time.monotonic() - signalled
    finally:
        if serve.poll() is None:
            serve.kill()
    # the same sentences as the undisturbed reply (part counts vary: the voice samples its durations)
    assert not failure and complete_and_in_order(chunks), failure
    assert sorted({(c.index, c.text) for c in chunks}) == sorted(set(reference))
    assert code == 0, serve.communicate()[0][-2000:]
    assert stopped < exit_timeout + 5, f"exited {stopped:.1f}s after SIGTERM"
    print(f"SIGTERM → exit in {stopped:.1f}s; the reply in flight finished ({len(chunks)} chunks)")

