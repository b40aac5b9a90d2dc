"""The playback clock: stalls a player sees, and the server's estimate of what a client has buffered."""

from __future__ import annotations

import numpy as np
import pytest

from talkserve.playback import Playback, affordable_frames, falls_behind_at_start, stall_points, stalls, would_stall


@pytest.fixture(scope="module")
def sample_avatar():
    from talkserve.lipsync.avatars import Avatar, decode_image, prepare_portrait
    from talkserve.recipe import SAMPLE_PORTRAIT

    rgb = decode_image(SAMPLE_PORTRAIT.read_bytes())
    box, landmarks = prepare_portrait(rgb)
    return Avatar("sample", rgb, box, landmarks)


def test_stalls_counts_freezes_of_a_player_that_starts_at_the_first_chunk():
    assert stalls([]) == (0, 0.0)
    assert stalls([(1.0, 1.0), (1.5, 1.0), (2.9, 1.0)]) == (0, 0.0)  # always ahead of the playhead
    count, seconds = stalls([(1.0, 1.0), (2.5, 1.0), (3.0, 1.0), (5.0, 0.5)])
    assert count == 2 and seconds == pytest.approx(0.5 + 0.5)  # dry at 2.0 → 2.5; dry at 4.5 → 5.0
    assert stalls([(0.0, 1.0), (1.03, 1.0)]) == (0, 0.0)  # within a frame: no visible freeze
    assert stall_points([(1.0, 1.0), (2.5, 1.0), (3.0, 1.0), (5.0, 0.5)]) == [(1, pytest.approx(0.5)),
                                                                            (3, pytest.approx(0.5))]


def test_playback_buffer_is_what_was_sent_minus_what_has_played():
    clock = Playback()
    assert clock.buffered(now=5.0) == float("inf")
    clock.sent(0.24, now=10.0)
    clock.sent(1.0, now=10.1)
    assert clock.buffered(now=10.5) == pytest.approx(0.74)
    assert clock.buffered(now=12.0) < 0  # the client has been waiting


def test_a_clock_passed_between_processes_is_the_same_clock():
    clock = Playback()
    assert Playback.loads(clock.dumps()) == clock  # before the first chunk
    clock.sent(0.24, now=10.0)
    clock.sent(1.0 / 3, now=10.1)
    again = Playback.loads(clock.dumps())
    assert again == clock and again.buffered(now=10.5) == clock.buffered(now=10.5)


def test_would_stall_weighs_what_the_client_has_against_what_drawing_takes():
    clock = Playback()
    assert not would_stall(clock, 25, 1.0, 0.1, now=0.0)  # the reply's first part: nothing to protect yet
    assert affordable_frames(clock, 40.0, 0.1, now=0.0) is None
    clock.sent(0.24, now=10.0)  # a 6-frame first part: 0.24 s buffered at t=10
    assert not would_stall(clock, 25, None, 0.1, now=10.0)  # the generator's pace is not known yet
    assert would_stall(clock, 25, 40.0, 0.1, now=10.0)  # 25 frames take 0.625 s: dry before they land
    assert not would_stall(clock, 5, 40.0, 0.1, now=10.0)  # 0.24 − 0.125 = 0.115 s left when 5 land
    assert affordable_frames(clock, 40.0, 0.1, now=10.0) == 5
    clock.sent(0.2, now=10.12)  # those 5 frames, drawn in 0.12 s: the buffer grows
    assert affordable_frames(clock, 40.0, 0.1, now=10.12) == 8


def test_a_reply_starts_on_the_warp_when_wav2lip_could_not_follow_its_first_part():
    # a 6-frame first part is 0.24 s of audio; with 0.2 s kept in hand, the next frame must land in 0.04 s
    assert falls_behind_at_start(6, 25.0, 20.0, 0.2)  # 0.05 s a frame: Wav2Lip would leave it at once
    assert not falls_behind_at_start(6, 25.0, 200.0, 0.2)  # a GPU's pace: Wav2Lip from the first frame
    assert not falls_behind_at_start(6, 25.0, None, 0.2)  # nothing measured yet


def test_degrading_switches_to_the_warp_for_the_rest_of_the_sentence(sample_avatar):
    from talkserve.lipsync import animate_degrading
    from talkserve.lipsync.warp import WarpConfig, WarpRig, mouth_shapes

    sr, fps = 16000, 25.0
    t = np.arange(int(sr * 2.4)) / sr
    audio = (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
    rig = WarpRig(sample_avatar.portrait, sample_avatar.landmarks, WarpConfig())
    calls, asked = [], []

    def generator(mel, face):
        calls.append(len(mel))
        return face[:, 3:]  # the reference half: a stand-in generator

    def use_warp(frames):
        asked.append(frames)
        return len(asked) == 2  # the second part would stall

    parts = list(animate_degrading(audio, sr, sample_avatar, generator, rig, use_warp, fps, 6, 25))
    assert [len(p.frames) for p in parts] == [6, 25, 25, 4]
    assert calls == [6] and asked == [6, 25]  # once switched, it stays the warp and is not asked again
    frames = np.concatenate([p.frames for p in parts])
    warp = rig.animate(mouth_shapes(audio, sr, fps, len(frames), rig.cfg))
    assert (frames[6:] == warp[6:]).all() and not (frames[:6] == warp[:6]).all()


def test_later_parts_are_no_bigger_than_the_budget_and_cover_the_sentence_exactly():
    from talkserve.lipsync import stream_parts

    sr, fps = 16000, 25.0
    audio = np.random.default_rng(0).standard_normal(int(sr * 2.0) + 123).astype(np.float32)
    caps = iter([4, 0, None, 9, 100, None])
    seen = []

    def render(start, end):
        seen.append((start, end))
        return np.zeros((end - start, 2, 2, 3), np.uint8)

    parts = list(stream_parts(audio, sr, render, fps, 6, 25, budget=lambda: next(caps)))
    assert [len(p.frames) for p in parts] == [6, 4, 1, 25, 9, 5]  # 0 → one frame; None → a full part
    assert seen[0] == (0, 6) and seen[-1][1] == 50
    assert np.array_equal(np.concatenate([p.audio for p in parts]), audio)  # exactly the sentence's audio
