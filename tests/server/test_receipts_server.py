"""Read receipts on the real server: a reader that stops reading holds at most `unread_parts` parts
in the server and is given up after `unread_timeout_s`; a reader that reads gets the same reply."""

from __future__ import annotations

import time

import pytest
from helpers import LONG_QUESTION, edited_copy, metric, wait_idle

from talkserve.client import TalkClient

UNREAD, TIMEOUT = 2, 4.0


@pytest.fixture(scope="module")
def receipts_server(built, tmp_path_factory):
    from talkserve.server.serve import Ports, Server

    _, current = built
    root = edited_copy(current, tmp_path_factory.mktemp("receipts"),
                       # no byte budget for replies without receipts: the same whole raw reply both ways
                       lipsync={"unread_parts": UNREAD, "unread_timeout_s": TIMEOUT, "unreceipted_mb": 0})
    srv = Server(root, Ports.free(), log=root.parent / "tritonserver.log").start()
    yield srv
    assert srv.stop() == 0


def test_a_reader_that_stops_reading_holds_a_window_of_parts_and_is_given_up(receipts_server):
    srv = receipts_server
    url = f"127.0.0.1:{srv.ports.grpc}"
    with TalkClient(url, receipts=True) as client:
        chunks = client.stream(LONG_QUESTION, "sample", max_new_tokens=120)
        next(chunks)  # one part taken, then this reader stops reading
        start = metric(srv, "talkserve_chunks_streamed_total")
        time.sleep(TIMEOUT / 2)
        assert metric(srv, "talkserve_chunks_streamed_total") - start <= UNREAD  # the window, no more
        deadline = time.monotonic() + TIMEOUT + 10
        while metric(srv, "talkserve_lipsync_readers_given_up_total") < 1:
            assert time.monotonic() < deadline, "the silent reader was not given up"
            time.sleep(0.2)
        wait_idle(srv, 30)  # nothing left working for it
        rest = list(chunks)  # reading again: what was sent, then the end
        assert len(rest) <= UNREAD
    with TalkClient(url) as client:  # and the server serves the next reader in full
        assert len(list(client.stream("Who are you?", "sample", max_new_tokens=30))) > 1


def test_receipts_change_nothing_a_reading_client_gets(receipts_server):
    """The same sentences in order, every one whole (its frames are its speech's: the voice samples
    its durations, so the lengths themselves vary run to run), and no reader that reads is given up."""
    url = f"127.0.0.1:{receipts_server.ports.grpc}"
    given_up = metric(receipts_server, "talkserve_lipsync_readers_given_up_total")
    replies = []
    for receipts in (True, False):
        with TalkClient(url, receipts=receipts) as client:
            chunks = list(client.stream("Tell me a joke.", "sample", max_new_tokens=60))
        sentences: dict[int, tuple[str, int, int, int]] = {}
        for c in chunks:
            text, samples, frames, rate = sentences.get(c.index, (c.text, 0, 0, c.sample_rate))
            sentences[c.index] = (text, samples + len(c.audio), frames + len(c.video), rate)
        for text, samples, frames, rate in sentences.values():
            assert abs(frames - round(samples / rate * 25)) <= 1, text
        replies.append([text for text, *_ in sentences.values()])
    assert replies[0] == replies[1] and len(replies[0]) > 1
    assert metric(receipts_server, "talkserve_lipsync_readers_given_up_total") == given_up


def test_receipts_flooding_a_reply_stream_get_no_answers_and_the_reply_arrives_whole(receipts_server):
    """ack answers nothing: its responses, written beside the reply's parts on one stream, made
    Triton 2.51 abort (proto_buffer_writer). A flood of receipts on one stream: the reply completes,
    none of them is answered, the server lives on."""
    import queue

    import numpy as np
    import tritonclient.grpc as grpcclient

    from talkserve.client import OUTPUTS, RECEIPT
    from talkserve.client.inputs import request_inputs

    url = f"127.0.0.1:{receipts_server.ports.grpc}"
    got: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    client.start_stream(callback=lambda result, error: got.put((result, error)))
    flow = "flood"
    inputs = [*request_inputs("Hello!", "sample"), _receipts_input(flow)]
    client.async_stream_infer("talking_head", inputs, outputs=[grpcclient.InferRequestedOutput(n) for n in OUTPUTS],
                              enable_empty_final_response=True)
    parts, ids = 0, []
    while True:
        result, error = got.get(timeout=120)
        assert error is None, error
        response = result.get_response()
        ids.append(response.id)
        if response.outputs:
            parts += 1
            for n in range(20):  # far more receipts than parts, while parts are being written
                receipt = [_receipts_input(flow), grpcclient.InferInput("parts", [1], "INT64")]
                receipt[1].set_data_from_numpy(np.array([parts + n], np.int64))
                client.async_stream_infer("ack", receipt, request_id=RECEIPT)
        if response.parameters["triton_final_response"].bool_param:
            break
    time.sleep(1.0)  # answers to receipts, if any, would have arrived by now
    client.stop_stream()
    client.close()
    assert parts >= 2 and RECEIPT not in ids and got.empty()
    with TalkClient(url) as reader:  # the server lives on
        assert list(reader.stream("Thanks.", "sample", max_new_tokens=6))


def _receipts_input(flow: str):
    import numpy as np
    import tritonclient.grpc as grpcclient

    tensor = grpcclient.InferInput("receipts", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([flow.encode()], dtype=np.object_))
    return tensor
