"""The drain's bookkeeping, without a server: what counts as work in flight, when it is over."""

from __future__ import annotations

import itertools

from talkserve.runtime.drain import busy, clear, is_draining, start, wait_idle

METRICS = """# HELP nv_inference_pending_request_count Pending requests
nv_inference_pending_request_count{model="tts",version="1"} 2
nv_inference_pending_request_count{model="llm",version="1"} 0
nv_inference_pending_request_count_other{model="llm"} 7
talkserve_requests_executing{model="lipsync"} 1
talkserve_requests_executing_seconds{model="lipsync"} 5
"""


def test_busy_sums_pending_and_executing_requests_only():
    assert busy(METRICS) == 3
    assert busy("nv_inference_request_success{model=\"llm\"} 9\n") == 0


def test_wait_idle_needs_a_quiet_spell_not_one_idle_scrape():
    # an ensemble hands a sentence from one step to the next: one scrape may see nothing in flight
    scrapes = itertools.chain(["x 0", METRICS, "x 0", METRICS], itertools.repeat("x 0"))
    reads = []

    def read(_url):
        reads.append(1)
        return next(scrapes)

    assert wait_idle("unused", timeout=5, settle=0.3, read=read)
    assert len(reads) >= 7  # idle seen twice, busy again, then a full quiet spell


def test_wait_idle_gives_up_at_the_timeout_and_stops_when_the_server_is_gone():
    assert not wait_idle("unused", timeout=0.3, settle=0.1, read=lambda _: METRICS)

    def gone(_url):
        raise ConnectionRefusedError

    assert wait_idle("unused", timeout=5, read=gone)


def test_the_flag_is_per_server_process():
    start(999_999_001)
    try:
        assert is_draining(999_999_001) and not is_draining(999_999_002)
    finally:
        clear(999_999_001)
    assert not is_draining(999_999_001)
