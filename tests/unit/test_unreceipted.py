"""A reply without read receipts: paced to its player's clock, and stopped at its byte budget."""

from __future__ import annotations

import pytest

from talkserve.playback import Playback
from talkserve.runtime.unreceipted import OverBudget, charge, paced


class Clock:
    def __init__(self):
        self.now = 100.0

    def sleep(self, s: float) -> None:
        self.now += s


def test_a_part_waits_until_the_player_holds_at_most_the_lead():
    clock, player = Clock(), Playback()
    player.sent(0.6, now=clock.now)  # first part at t=100
    player.sent(2.4, now=clock.now)  # three seconds buffered
    assert paced(lambda: player.buffered(clock.now), 1.5, lambda: True, clock.sleep)
    assert 1.45 <= player.buffered(clock.now) <= 1.5  # waited about 1.5 s of playback, no more
    assert 101.5 <= clock.now <= 101.55


def test_a_player_within_the_lead_does_not_wait():
    clock, player = Clock(), Playback()
    player.sent(1.0, now=clock.now)
    assert paced(lambda: player.buffered(clock.now), 1.5, lambda: True, clock.sleep)
    assert clock.now == 100.0


def test_a_reply_stopped_while_it_waits_is_not_computed():
    clock, player = Clock(), Playback()
    player.sent(10.0, now=clock.now)
    assert not paced(lambda: player.buffered(clock.now), 1.5, lambda: clock.now < 101.0, clock.sleep)
    assert clock.now < 101.1  # it noticed within a poll


def test_the_budget_counts_every_part_and_names_the_limit_and_the_ways_past_it():
    sent = 0
    for _ in range(4):
        sent = charge(sent, 11_796_480, 48e6, "sentence 0 part 1")  # 15 raw frames of 512²
    with pytest.raises(OverBudget) as e:
        charge(sent, 11_796_480, 48e6, "sentence 1 part 0")
    message = str(e.value)
    assert all(s in message for s in ("`receipts`", "48 MB", "sentence 1 part 0", "video_codec: h264")), message
    assert charge(10**12, 1, 0, "anywhere") == 10**12 + 1  # 0: no limit
