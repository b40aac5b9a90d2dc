"""Read receipts (talkserve.runtime.receipts): the window a flow's reader keeps, and giving a silent one up."""

from __future__ import annotations

import threading
import time

import pytest

from talkserve.runtime.receipts import ReaderGone, Receipts


def test_receipts_keep_the_most_parts_acknowledged(tmp_path):
    r = Receipts(tmp_path)
    assert r.acknowledged("flow") == 0
    r.acknowledge("flow", 3)
    r.acknowledge("flow", 2)  # a late receipt: never goes back
    assert r.acknowledged("flow") == 3 and Receipts(tmp_path).acknowledged("flow") == 3  # another process
    assert r.acknowledged("other") == 0


def test_there_is_room_while_fewer_than_the_window_are_unread(tmp_path):
    r = Receipts(tmp_path)
    r.acknowledge("f", 4)
    start = time.monotonic()
    assert r.wait_for_room("f", sent=5, window=2, timeout_s=5)
    assert time.monotonic() - start < 0.05


def test_a_full_window_waits_for_the_reader(tmp_path):
    r = Receipts(tmp_path)
    threading.Timer(0.3, lambda: r.acknowledge("f", 1)).start()  # one of two read: a window of 1 is still full
    threading.Timer(0.5, lambda: r.acknowledge("f", 2)).start()
    start = time.monotonic()
    assert r.wait_for_room("f", sent=2, window=1, timeout_s=5, poll_s=0.005)
    assert 0.45 < time.monotonic() - start < 2


def test_a_reader_that_acknowledges_nothing_is_given_up_and_each_receipt_restarts_the_clock(tmp_path):
    r = Receipts(tmp_path)
    with pytest.raises(ReaderGone, match="2 parts unread"):
        r.wait_for_room("f", sent=2, window=2, timeout_s=0.2, poll_s=0.01)
    for at, parts in ((0.15, 2), (0.3, 3), (0.45, 4)):  # receipts keep coming, each within the timeout
        threading.Timer(at, lambda n=parts: r.acknowledge("g", n)).start()
    assert r.wait_for_room("g", sent=5, window=2, timeout_s=0.25, poll_s=0.01)


def test_a_stopped_reply_does_not_wait(tmp_path):
    assert not Receipts(tmp_path).wait_for_room("f", sent=3, window=1, timeout_s=5, live=lambda: False)


def test_a_reader_that_says_it_left_stops_its_flow_at_once_and_no_other(tmp_path):
    r = Receipts(tmp_path)
    threading.Timer(0.2, lambda: Receipts(tmp_path).leave("f")).start()  # `cancel`, another process
    start = time.monotonic()
    assert not r.wait_for_room("f", sent=3, window=1, timeout_s=5, poll_s=0.01)  # a full window, then it left
    assert 0.15 < time.monotonic() - start < 1
    assert r.left("f") and not r.wait_for_room("f", sent=0, window=2, timeout_s=5)  # with room, too
    assert not r.left("g") and r.wait_for_room("g", sent=0, window=2, timeout_s=5)


def test_parts_sent_are_counted_across_instances_and_per_flow(tmp_path):
    a, b = Receipts(tmp_path), Receipts(tmp_path)  # two lipsync instances drawing one reply's sentences
    assert a.sent("f") == 0
    a.note_sent("f", a.sent("f") + 1)
    b.note_sent("f", b.sent("f") + 1)
    assert a.sent("f") == b.sent("f") == 2 and a.sent("g") == 0
    b.acknowledge("f", 1)
    assert not a.wait_for_room("f", a.sent("f"), window=1, timeout_s=0.05, live=lambda: False)
    assert a.wait_for_room("f", a.sent("f"), window=2, timeout_s=0.05)
