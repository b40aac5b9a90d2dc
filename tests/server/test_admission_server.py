"""Admission control on the real tritonserver: at the stream limit a new reply — text or voice — is
refused at once with RESOURCE_EXHAUSTED naming the limit, the admitted reply is untouched, and the
slot comes back."""

from __future__ import annotations

import time

import numpy as np
import pytest
from helpers import LONG_QUESTION, Collector, edited_copy, metric

from talkserve.client import NO_RETRY, RetryPolicy, TalkClient, TalkError


@pytest.fixture(scope="module")
def full_server(built, tmp_path_factory):
    """The suite's build with `serving.max_streams: 1` (set in both entry models' configs, as a build
    writes it)."""
    from talkserve.server.serve import Ports, Server

    _, current = built
    limit = {"max_streams": 1, "stream_lease_seconds": 60}
    root = edited_copy(current, tmp_path_factory.mktemp("admission"), admit=limit, asr={"admission": limit})
    srv = Server(root, Ports.free(), log=root.parent / "tritonserver.log").start()
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def question() -> tuple[np.ndarray, int]:
    """"Hello!" spoken by the starter voice, with silence around it."""
    from talkserve.models.piper_tts import PiperTTS
    from talkserve.recipe import TTSRecipe

    voice = PiperTTS(*TTSRecipe().resolved_paths(), noise_scale=0.0, noise_w_scale=0.0)
    pause = np.zeros(voice.sample_rate // 2, np.float32)
    return np.concatenate([pause, voice.synthesize("Hello!"), pause]), voice.sample_rate


def _refusal(url: str, voice: tuple[np.ndarray, int] | None = None, **kw) -> tuple[TalkError, float]:
    start = time.monotonic()
    with TalkClient(url, retry=NO_RETRY) as client, pytest.raises(TalkError) as e:
        list(client.stream_voice(*voice, "sample", **kw) if voice else client.stream("Hello!", "sample", **kw))
    return e.value, time.monotonic() - start


def _wait_for(server, name: str, value: float, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while metric(server, name) != value:
        assert time.monotonic() < deadline, f"{name} stayed {metric(server, name)}, not {value}"
        time.sleep(0.1)


def test_a_reply_over_the_limit_is_refused_at_once_and_the_admitted_one_is_untouched(full_server):
    url = f"127.0.0.1:{full_server.ports.grpc}"
    alone = Collector(url, LONG_QUESTION, "alone")
    alone.start()
    alone.join(300)
    refused_before = metric(full_server, "talkserve_streams_refused_total")

    admitted = Collector(url, LONG_QUESTION, "admitted")
    admitted.start()
    assert admitted.first.wait(60) and admitted.error is None
    assert metric(full_server, "talkserve_streams_active") == 1
    error, seconds = _refusal(url, conversation_id="other")
    assert error.status == "RESOURCE_EXHAUSTED"
    assert "stream limit (serving.max_streams = 1)" in str(error)
    assert seconds < 1.0  # not queued behind the admitted reply (bench/pipeline.py measures it: ~15 ms)
    assert metric(full_server, "talkserve_streams_refused_total") == refused_before + 1
    admitted.join(300)
    assert admitted.error is None

    def sentences(collector):  # (index, text) per sentence, each streamed whole: parts 0, 1, … in order
        chunks = [c for _, c in collector.got]
        for index in sorted({c.index for c in chunks}):
            assert [c.part for c in chunks if c.index == index] == list(range(sum(c.index == index for c in chunks)))
        return sorted({(c.index, c.text) for c in chunks})

    # untouched: the same reply, sentence for sentence, as when it ran alone (part sizes follow the
    # client's buffer under degradation, so they may differ between runs)
    assert sentences(admitted) == sentences(alone)
    assert metric(full_server, "talkserve_streams_capacity") == 1


def test_the_slot_comes_back_when_the_last_sentence_is_drawn(full_server):
    url = f"127.0.0.1:{full_server.ports.grpc}"
    _wait_for(full_server, "talkserve_streams_active", 0)
    with TalkClient(url, retry=NO_RETRY) as client:
        assert list(client.stream("Hello!", "sample"))
    _wait_for(full_server, "talkserve_streams_active", 0)
    with TalkClient(url, retry=NO_RETRY) as client:  # admitted again at once, no retry needed
        assert list(client.stream("Hello!", "sample"))


def test_a_bad_request_gives_its_slot_back(full_server):
    url = f"127.0.0.1:{full_server.ports.grpc}"
    with TalkClient(url, retry=NO_RETRY) as client, pytest.raises(TalkError, match="avatar_id"):
        list(client.stream("Hello!", "nobody"))
    _wait_for(full_server, "talkserve_streams_active", 0, timeout=3)


def test_barge_in_is_admitted_while_the_server_is_full(full_server):
    url = f"127.0.0.1:{full_server.ports.grpc}"
    old = Collector(url, LONG_QUESTION, "barge")
    old.start()
    assert old.first.wait(60)
    assert metric(full_server, "talkserve_streams_active") == 1 and old.ended_at is None  # the server is full
    with TalkClient(url, retry=NO_RETRY) as client:  # the same conversation: it supersedes, no new slot
        assert list(client.stream("Tell me a joke.", "sample", conversation_id="barge"))
    old.join(60)
    assert old.error is None


def test_the_client_retries_a_full_server_until_a_slot_frees(full_server):
    url = f"127.0.0.1:{full_server.ports.grpc}"
    busy = Collector(url, "Hello!", "busy")
    busy.start()
    assert busy.first.wait(60)
    with TalkClient(url, retry=RetryPolicy(attempts=8, initial_backoff_s=0.5)) as client:
        chunks = list(client.stream("Hello!", "sample", conversation_id="patient"))
    busy.join(60)
    assert chunks and client.attempts >= 2 and busy.error is None


def test_voice_replies_take_and_give_back_the_same_slots(full_server, question):
    url = f"127.0.0.1:{full_server.ports.grpc}"
    _wait_for(full_server, "talkserve_streams_active", 0)
    admitted = Collector(url, LONG_QUESTION, "text")
    admitted.start()
    assert admitted.first.wait(60) and admitted.error is None
    error, seconds = _refusal(url, question, conversation_id="voice")  # asr refuses before recognising
    assert error.status == "RESOURCE_EXHAUSTED" and "serving.max_streams = 1" in str(error)
    assert seconds < 1.0
    admitted.join(300)
    assert admitted.error is None
    _wait_for(full_server, "talkserve_streams_active", 0)

    with TalkClient(url, retry=NO_RETRY) as client:
        chunks = client.stream_voice(*question, "sample", conversation_id="voice")
        first = next(chunks)
        assert first.user_text.strip().lower().startswith("hello")
        assert metric(full_server, "talkserve_streams_active") == 1  # the voice reply holds the slot
        error, _ = _refusal(url, conversation_id="text")
        assert error.status == "RESOURCE_EXHAUSTED"
        assert list(chunks)
    _wait_for(full_server, "talkserve_streams_active", 0)
    assert metric(full_server, "talkserve_streams_admitted_total", model="asr") >= 1


def test_a_voice_request_asr_refuses_gives_its_slot_back(full_server, question):
    url = f"127.0.0.1:{full_server.ports.grpc}"
    _wait_for(full_server, "talkserve_streams_active", 0)
    silence = (np.zeros(question[1], np.float32), question[1])
    with TalkClient(url, retry=NO_RETRY) as client, pytest.raises(TalkError, match="audio"):
        list(client.stream_voice(*silence, "sample"))
    _wait_for(full_server, "talkserve_streams_active", 0, timeout=3)  # released, not lapsed (10 s unclaimed)
    with TalkClient(url, retry=NO_RETRY) as client:
        assert list(client.stream("Hello!", "sample"))
