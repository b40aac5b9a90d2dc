"""Plain gRPC clients (tritonclient only, no read receipts) on the real server: a reply is paced to its
player's clock, a reader that stops reading costs at most `unreceipted_mb` and frees its slot, and a
reader that reads gets its whole reply (issue: a client that never reads costs a bounded amount)."""

from __future__ import annotations

import queue
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from helpers import LONG_QUESTION, edited_copy, metric, wait_streams_free

from talkserve.client import MAX_RECEIVE_BYTES, OUTPUTS, TalkClient, request_inputs

LEAD_S, BUDGET_MB = 1.0, 24.0  # a first part (6 raw frames of 512², 4.7 MB) and one of 15 (11.8 MB) fit, a third not


@pytest.fixture(scope="module")
def plain_server(built, tmp_path_factory):
    from talkserve.server.serve import Ports, Server

    _, current = built
    # the warp mouth draws hundreds of frames/s: unpaced, a whole reply would leave in a burst
    root = edited_copy(current, tmp_path_factory.mktemp("unreceipted"),
                       lipsync={"kind": "warp", "unreceipted_lead_s": LEAD_S, "unreceipted_mb": BUDGET_MB})
    srv = Server(root, Ports.free(), log=root.parent / "tritonserver.log").start()
    yield srv
    assert srv.stop() == 0


def plain_stream(url: str, text: str, codec: str, on_response=None):
    """A tritonclient stream (no receipts); (client, queue of (seconds, result, error))."""
    got: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url, channel_args=[("grpc.max_receive_message_length",
                                                                  MAX_RECEIVE_BYTES)])

    def callback(result, error):
        got.put((time.monotonic(), result, error))
        if on_response:
            on_response()

    client.start_stream(callback=callback)
    codec_input = grpcclient.InferInput("video_codec", [1], "BYTES")
    codec_input.set_data_from_numpy(np.array([codec.encode()], dtype=np.object_))
    client.async_stream_infer("talking_head", [*request_inputs(text, "sample", 120), codec_input],
                              outputs=[grpcclient.InferRequestedOutput(n) for n in OUTPUTS],
                              enable_empty_final_response=True)
    return client, got


def test_plain_readers_that_stop_reading_cost_at_most_the_budget_and_free_their_slots(plain_server):
    srv, url = plain_server, f"127.0.0.1:{plain_server.ports.grpc}"
    stopped, streamed = (metric(srv, n) for n in ("talkserve_lipsync_unreceipted_stopped_total",
                                                  "talkserve_chunks_streamed_total"))
    release = threading.Event()
    readers = [plain_stream(url, LONG_QUESTION, "raw", on_response=release.wait) for _ in range(3)]
    try:
        deadline = time.monotonic() + 90
        while metric(srv, "talkserve_lipsync_unreceipted_stopped_total") < stopped + 3:
            assert time.monotonic() < deadline, "a stalled plain reader was never stopped at its budget"
            time.sleep(0.2)
        wait_streams_free(srv, 30)  # its slot is free: no stage works for it any more
        parts = metric(srv, "talkserve_chunks_streamed_total") - streamed
        assert parts <= 3 * 2, f"{parts} parts sent to three readers of a {BUDGET_MB:.0f} MB budget"
    finally:
        release.set()
        for client, _ in readers:
            client.stop_stream(cancel_requests=True)
            client.close()
    with TalkClient(url) as reader:  # and the server serves the next reply in full
        assert len(list(reader.stream("Who are you?", "sample", max_new_tokens=30))) > 1


def test_a_plain_reader_that_reads_gets_its_whole_reply_paced_to_its_player(plain_server):
    client, got = plain_stream(f"127.0.0.1:{plain_server.ports.grpc}", LONG_QUESTION, "h264")
    try:
        arrivals, order, audio_s = [], [], 0.0
        while True:
            at, result, error = got.get(timeout=120)
            assert error is None, error
            response = result.get_response()
            if response.outputs:
                audio_s += len(result.as_numpy("audio")) / int(result.as_numpy("sample_rate")[0])
                arrivals.append((at, audio_s))
                order.append((int(result.as_numpy("chunk_index")[0]), int(result.as_numpy("part_index")[0])))
            if response.parameters["triton_final_response"].bool_param:
                break
    finally:
        client.stop_stream()
        client.close()
    assert order == sorted(order) and order[0] == (0, 0) and len({c for c, _ in order}) >= 2  # every sentence
    assert all(p == 0 or (c, p - 1) in order for c, p in order)  # no part missing inside a sentence
    first = arrivals[0][0]
    ahead = max(sent - (at - first) for at, sent in arrivals)  # the player's buffer when each part landed
    assert audio_s > 3 * (LEAD_S + 0.6)  # long enough that an unpaced warp reply would run far ahead
    assert ahead <= LEAD_S + 0.6 + 0.4, f"the server ran {ahead:.2f} s ahead of a {audio_s:.1f} s reply"


def test_a_raw_reply_past_the_budget_ends_there_and_receipts_lift_it(plain_server):
    """Ended, not failed: on Triton 2.51 an error response in the middle of a reply leaves the
    ensemble's request in flight for good (the server's exit timed out), so the reply ends with its
    final flag where the budget stops it, counted and logged with the ways past it."""
    srv = plain_server
    stopped = metric(srv, "talkserve_lipsync_unreceipted_stopped_total")
    client, got = plain_stream(f"127.0.0.1:{srv.ports.grpc}", LONG_QUESTION, "raw")
    video = 0
    try:
        while True:
            _, result, error = got.get(timeout=120)
            assert error is None, error
            if result.get_response().outputs:
                video += result.as_numpy("video").nbytes
            if result.get_response().parameters["triton_final_response"].bool_param:
                break
    finally:
        client.stop_stream()
        client.close()
    assert 0 < video <= BUDGET_MB * 1e6
    assert metric(srv, "talkserve_lipsync_unreceipted_stopped_total") == stopped + 1
    wait_streams_free(srv, 30)
    with TalkClient(f"127.0.0.1:{srv.ports.grpc}") as reader:  # with receipts, the same reply is whole
        whole = list(reader.stream(LONG_QUESTION, "sample", max_new_tokens=120))
    assert sum(c.video.nbytes for c in whole) > BUDGET_MB * 1e6 and len({c.index for c in whole}) >= 2
