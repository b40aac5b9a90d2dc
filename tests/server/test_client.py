"""Client library: retries only what the server could not take, never a started stream."""

from __future__ import annotations

import random
import signal
import threading
import time

import pytest

from talkserve.client import RetryPolicy, TalkClient, TalkError


def test_backoff_grows_exponentially_with_full_jitter():
    policy = RetryPolicy(attempts=6, initial_backoff_s=0.25, max_backoff_s=1.0, multiplier=2.0)
    rng = random.Random(0)
    samples = [list(policy.delays(rng)) for _ in range(200)]
    assert all(len(s) == 5 for s in samples)
    caps = [0.25, 0.5, 1.0, 1.0, 1.0]
    for k, cap in enumerate(caps):
        column = [s[k] for s in samples]
        assert min(column) >= 0 and max(column) <= cap and max(column) > 0.8 * cap  # jitter spans the range


def test_unavailable_is_retried_then_reported(tmp_path):
    with TalkClient("127.0.0.1:1", retry=RetryPolicy(attempts=3, initial_backoff_s=0.05)) as client:
        with pytest.raises(TalkError) as e:
            list(client.stream("Hi.", "sample", timeout=10))
        assert e.value.status == "UNAVAILABLE" and client.attempts == 3


def test_a_full_server_reads_as_resource_exhausted_and_is_retried():
    from tritonclient.utils import InferenceServerException

    from talkserve.client import stream_error_status
    from talkserve.text import OVERLOADED_MESSAGE

    message = f"in ensemble 'talking_head', {OVERLOADED_MESSAGE} (serving.max_streams = 2); retry on another replica"
    # Triton has no RESOURCE_EXHAUSTED: it answers UNAVAILABLE (with triton_grpc_error) or no code at all
    for status in (None, "StatusCode.UNAVAILABLE"):
        assert stream_error_status(InferenceServerException(message, status=status)) == "RESOURCE_EXHAUSTED"
    assert "RESOURCE_EXHAUSTED" in RetryPolicy().retry_on
    draining = InferenceServerException("server is draining for shutdown; retry on another replica")
    assert stream_error_status(draining) == "UNAVAILABLE"


@pytest.mark.server
def test_bad_input_is_never_retried(url):
    with TalkClient(url) as client, pytest.raises(TalkError):
        list(client.stream("Hi.", "ghost"))
    assert client.attempts == 1


@pytest.mark.server
def test_a_server_that_comes_up_late_is_reached_by_retries(built, tmp_path):
    from talkserve.server.serve import Ports, Server

    _, current = built
    ports = Ports.free()
    server = Server(current, ports, log=tmp_path / "triton.log")
    starter = threading.Timer(1.0, server.start)
    starter.start()
    try:
        with TalkClient(f"127.0.0.1:{ports.grpc}", retry=RetryPolicy(attempts=200, max_backoff_s=1.0)) as client:
            chunks = list(client.stream("Thanks.", "sample", max_new_tokens=6))
        assert chunks and client.attempts > 1
    finally:
        starter.join()
        server.stop()


@pytest.mark.server
def test_a_stream_that_started_is_never_retried(built, tmp_path):
    from talkserve.server.serve import Ports, Server

    _, current = built
    server = Server(current, Ports.free(), log=tmp_path / "triton.log").start()
    try:
        with TalkClient(f"127.0.0.1:{server.ports.grpc}", retry=RetryPolicy(attempts=5)) as client:
            reply = client.stream("How does this work?", "sample")
            next(reply)
            server.proc.send_signal(signal.SIGKILL)  # the server dies mid-reply
            start = time.monotonic()
            with pytest.raises(TalkError):
                list(reply)
            assert client.attempts == 1 and time.monotonic() - start < 30
    finally:
        server.stop()
