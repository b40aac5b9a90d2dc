"""lipsync's concurrency pieces without Triton: one generator call for several streams' frames, and
each stream's sentences in order although they run on threads of their own."""

from __future__ import annotations

import threading
import time
import types

import numpy as np

from talkserve.lipsync import batching
from talkserve.lipsync.batching import Batcher, InOrder, Seats


def recording_generator(calls: list[int], seconds: float = 0.02):
    def generate(mel, face):  # output frame k = its mel's first value: who asked for it stays visible
        calls.append(len(mel))
        time.sleep(seconds)
        return np.broadcast_to(mel[:, :1, :1, :1], (len(mel), 3, 2, 2)).copy()

    return generate


def frames_of(stream: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    mel = np.full((n, 1, 80, 16), float(stream), np.float32)
    mel[:, 0, 0, 0] = stream * 100 + np.arange(n)
    return mel, np.zeros((n, 6, 4, 4), np.float32)


def run_streams(batcher: Batcher, parts: dict[int, list[int]]) -> dict[int, list[np.ndarray]]:
    """Each stream on its own thread, calling the batcher once per part, as lipsync's sentences do."""
    got: dict[int, list[np.ndarray]] = {s: [] for s in parts}
    start = threading.Barrier(len(parts))

    def draw(s: int) -> None:
        with batcher.drawing():
            start.wait()
            for n in parts[s]:
                got[s].append(batcher(*frames_of(s, n)))

    threads = [threading.Thread(target=draw, args=(s,)) for s in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return got


def test_parts_of_concurrent_streams_share_one_generator_call_and_each_gets_its_own_frames():
    calls: list[int] = []
    batcher = Batcher(recording_generator(calls), max_frames=100, window_s=0.5)
    got = run_streams(batcher, {1: [6, 25], 2: [6, 25], 3: [6, 25]})
    for s, outs in got.items():
        assert [len(o) for o in outs] == [6, 25]
        for o, n in zip(outs, [6, 25], strict=True):
            assert np.array_equal(o[:, 0, 0, 0], s * 100 + np.arange(n))  # its own frames, in order
    assert calls == [18, 75]  # all three first parts together, then all three second parts
    assert batcher.calls == 2 and batcher.frames == 93


def test_a_batch_never_exceeds_max_frames():
    calls: list[int] = []
    batcher = Batcher(recording_generator(calls), max_frames=50, window_s=0.5)
    got = run_streams(batcher, {1: [25, 25], 2: [25, 25], 3: [25, 25]})
    assert all(len(o) == 25 for outs in got.values() for o in outs)
    assert max(calls) <= 50 and sum(calls) == 150


def test_a_caller_that_queued_behind_a_call_waits_for_the_one_it_served_to_come_back():
    """Two sentences, each pasting and sending (20 ms) between its calls: they join, not take turns."""
    calls: list[int] = []
    batcher = Batcher(recording_generator(calls, 0.2), max_frames=100, window_s=0.08)
    barrier = threading.Barrier(2)

    def sentence(first_delay: float) -> None:
        with batcher.drawing():
            barrier.wait()
            time.sleep(first_delay)  # the second comes after the window, while the first's call runs
            for _ in range(4):
                batcher(np.zeros((5, 1, 80, 16), np.float32), np.zeros((5, 6, 96, 96), np.float32))
                time.sleep(0.02)  # paste and send

    threads = [threading.Thread(target=sentence, args=(d,)) for d in (0.0, 0.1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sum(calls) == 40 and calls.count(10) >= 2, calls  # joined calls after the first


def test_a_lone_stream_does_not_wait_for_the_window():
    calls: list[int] = []
    batcher = Batcher(recording_generator(calls, 0.0), max_frames=50, window_s=5.0)
    start = time.monotonic()
    run_streams(batcher, {1: [6, 25, 25]})
    assert time.monotonic() - start < 2  # everyone drawing is waiting: it goes at once
    assert calls == [6, 25, 25]


def test_a_generator_error_reaches_every_caller_of_its_batch():
    def broken(mel, face):
        raise RuntimeError("engine failed")

    batcher = Batcher(broken, max_frames=100, window_s=0.5)
    errors = []

    def draw(s):
        with batcher.drawing():
            try:
                batcher(*frames_of(s, 6))
            except RuntimeError as e:
                errors.append(str(e))

    threads = [threading.Thread(target=draw, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == ["engine failed"] * 2


def test_the_generator_seats_as_many_sentences_as_its_pace_keeps_in_real_time(monkeypatch):
    # the generator's call takes 0.1 s on a clock it advances itself: the pace is arithmetic, not the
    # load of the machine that runs the test (a busy CI runner once slept 0.14 s for 0.1 s)
    now = [0.0]
    monkeypatch.setattr(batching, "time", types.SimpleNamespace(monotonic=lambda: now[0], time=time.time))

    def slow(mel, face):  # 10 frames in 0.1 s: 100 frames/s, four 25 fps sentences' worth
        now[0] += 0.1
        return np.zeros((len(mel), 3, 96, 96), np.float32)

    b = Batcher(slow)
    seats = Seats(b, video_fps=25.0)
    assert seats.limit() == 1  # nothing measured: one sentence at a time
    assert seats.take() and not seats.take()
    seats.give()
    b(np.zeros((10, 1, 80, 16), np.float32), np.zeros((10, 6, 96, 96), np.float32))
    assert seats.limit() == 4
    taken = [seats.take() for _ in range(5)]
    assert taken[:3] == [True] * 3 and taken[-1] is False
    b.pace = 24.0  # a generator just short of real time still draws one sentence
    assert seats.limit() == 1


def test_sentences_of_a_stream_finish_in_order_whatever_order_they_start_in(tmp_path):
    order, sent = InOrder(tmp_path, timeout_s=10), []

    def sentence(key: str, i: int) -> None:
        waited = order.wait(key, i)
        sent.append((key, i))
        order.finished(key, i, waited)

    threads = [threading.Thread(target=sentence, args=(k, i)) for i in (3, 2, 1, 0) for k in ("a", "b")]
    for t in threads:
        t.start()
        time.sleep(0.01)
    for t in threads:
        t.join(10)
    for key in ("a", "b"):
        assert [i for k, i in sent if k == key] == [0, 1, 2, 3]


def test_sentences_drawn_by_two_instances_still_leave_in_order_per_stream(tmp_path):
    # two lipsync instances share nothing but the scratch directory; the scheduler hands each
    # any sentence, so sentence i of a stream may wait on the other instance's i - 1
    instances, sent, lock = [InOrder(tmp_path, timeout_s=10) for _ in range(2)], [], threading.Lock()

    def sentence(order: InOrder, key: str, i: int) -> None:
        waited = order.wait(key, i)
        time.sleep(0.005)  # drawing
        with lock:
            sent.append((key, i))
        order.finished(key, i, waited)

    threads = [threading.Thread(target=sentence, args=(instances[(i + j) % 2], k, i))
               for i in (4, 3, 2, 1, 0) for j, k in enumerate(("a", "b", "c"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for key in ("a", "b", "c"):
        assert [i for k, i in sent if k == key] == [0, 1, 2, 3, 4]


def test_a_sentence_whose_predecessor_never_comes_gives_up_and_lets_the_next_go(tmp_path):
    order = InOrder(tmp_path, timeout_s=0.2)
    assert order.wait("s", 1) is False  # sentence 0 never arrived
    order.finished("s", 1, False)
    assert order.wait("s", 2) is True
    assert order.wait("t", 1, live=lambda: False) is False  # a stopped reply does not wait at all


def test_sentences_with_no_stream_and_no_conversation_run_one_at_a_time(tmp_path):
    key = ""
    order, inside, most = InOrder(tmp_path, timeout_s=5), [0], [0]
    lock = threading.Lock()

    def sentence() -> None:
        waited = order.wait(key, 0)
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.02)
        with lock:
            inside[0] -= 1
        order.finished(key, 0, waited)

    threads = [threading.Thread(target=sentence) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert most[0] == 1


def test_waiting_never_holds_the_order_while_asking_whether_the_reply_is_live(tmp_path):
    # lipsync's live() takes the lock its other threads hold while finishing a sentence: a waiter
    # asking it inside InOrder's own lock deadlocked the server (found by the streaming test)
    order, ipc = InOrder(tmp_path, timeout_s=5), threading.Lock()

    def live() -> bool:
        with ipc:
            return True

    result = []
    waiter = threading.Thread(target=lambda: result.append(order.wait("s", 1, live)))
    with ipc:
        waiter.start()
        time.sleep(0.3)  # the waiter is inside wait(), asking live()
        finisher = threading.Thread(target=order.finished, args=("s", 0, True))
        finisher.start()
        finisher.join(2)
        assert not finisher.is_alive()  # finishing does not wait on the waiter
    waiter.join(5)
    assert result == [True]
