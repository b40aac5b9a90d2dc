"""Admission control's stream leases (talkserve.runtime.admission), shared by stub processes."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from talkserve.runtime.admission import NO_STREAM, Overloaded, Streams


def test_admits_up_to_the_limit_and_names_it_when_full(tmp_path):
    streams = Streams(tmp_path)
    ids = [streams.admit(2) for _ in range(2)]
    assert len(set(ids)) == 2 and streams.active() == 2
    with pytest.raises(Overloaded, match=r"stream limit \(serving.max_streams = 2\)"):
        streams.admit(2)


@pytest.mark.parametrize("llm_first", [True, False])
def test_a_stream_ends_when_its_last_sentence_is_drawn_whichever_stage_is_last(tmp_path, llm_first):
    streams = Streams(tmp_path)
    stream = streams.admit(1)
    streams.done(stream, 0)
    if llm_first:
        streams.sent(stream, 2)
        assert streams.active() == 1  # sentence 1 is still being drawn
        streams.done(stream, 1)
    else:
        streams.done(stream, 1)
        assert streams.active() == 1  # llm may still stream more sentences
        streams.sent(stream, 2)
    assert streams.active() == 0
    streams.admit(1)  # the slot is free again


def test_a_reply_refused_before_its_first_sentence_frees_its_slot(tmp_path):
    streams = Streams(tmp_path)
    streams.sent(streams.admit(1), 0)  # llm rejected the request (bad input, or stopped at once)
    assert streams.active() == 0


def test_a_stream_whose_stages_died_stops_holding_a_slot(tmp_path):
    streams = Streams(tmp_path, lease_seconds=0.3)
    stream = streams.admit(1)
    with pytest.raises(Overloaded):
        streams.admit(1)
    time.sleep(0.2)
    streams.touch(stream)  # progress renews the lease
    time.sleep(0.2)
    assert streams.active() == 1
    time.sleep(0.35)
    streams.admit(1)  # nothing touched it for longer than its lease
    assert not (tmp_path / stream).exists()


def test_a_stream_llm_never_claims_stops_counting_but_a_claimed_one_holds_its_slot(tmp_path):
    streams = Streams(tmp_path, lease_seconds=5, claim_seconds=0.3)
    unclaimed, claimed = streams.admit(2), streams.admit(2)
    streams.claim(claimed)  # llm took this reply; the other was asr transcribing for a caller
    assert streams.active() == 2
    time.sleep(0.4)
    assert streams.active() == 1  # the unclaimed one no longer holds a slot
    streams.admit(2)
    streams.claim(unclaimed)  # llm late (queued behind busy instances): the reply counts again
    assert streams.active() == 3  # over the limit by the late one, never refused wrongly


def test_a_released_stream_frees_its_slot_at_once(tmp_path):
    streams = Streams(tmp_path)
    streams.release(streams.admit(1))  # asr refused the audio: llm will never see this reply
    streams.admit(1)


def test_a_new_reply_in_a_conversation_that_holds_a_slot_is_admitted(tmp_path):
    streams = Streams(tmp_path)
    streams.admit(1, "alice")
    streams.admit(1, "alice")  # barge-in supersedes alice's reply: no second slot needed
    with pytest.raises(Overloaded):
        streams.admit(1, "bob")
    with pytest.raises(Overloaded):
        streams.admit(1)


def test_marks_for_unknown_or_ended_streams_are_ignored(tmp_path):
    streams = Streams(tmp_path)
    for stream in (NO_STREAM, "0" * 32, "../escape"):
        streams.touch(stream)
        streams.sent(stream, 1)
        streams.done(stream, 0)
    assert streams.active() == 0 and sorted(p.name for p in tmp_path.iterdir()) == []


def _race(root, limit, barrier, results):
    barrier.wait()
    try:
        Streams(root).admit(limit)
        results.put(1)
    except Overloaded:
        results.put(0)


def test_processes_racing_for_the_last_slots_never_exceed_the_limit(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(tmp_path, 3, barrier, results)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert sum(results.get(timeout=5) for _ in procs) == 3
    assert Streams(tmp_path).active() == 3 and os.path.exists(tmp_path / ".lock")



def test_what_a_stage_keeps_on_a_stream_is_read_by_another_and_goes_with_the_stream(tmp_path):
    stream = Streams(tmp_path).admit(2)
    other = Streams(tmp_path)  # another lipsync instance
    assert other.kept(stream, "clock") is None
    Streams(tmp_path).keep(stream, "clock", "1.5 2.0")
    assert other.kept(stream, "clock") == "1.5 2.0" and other.running_streams() == [stream]
    other.sent(stream, 1)
    assert other.active() == 1  # a kept note is not a drawn sentence
    other.done(stream, 0)
    assert other.kept(stream, "clock") is None and other.running_streams() == []
    other.keep(stream, "clock", "3 4")  # an ended stream keeps nothing
    assert other.kept(stream, "clock") is None and not (tmp_path / stream).exists()
    assert other.kept(NO_STREAM, "clock") is None and other.kept("../x", "clock") is None
