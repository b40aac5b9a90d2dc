"""`talkserve web` in a real browser: Debian's Chromium, headless, with a fake camera/microphone that
plays a spoken question (tests/browser.sh installs chromium and chromium-driver; CI runs it)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    browser,
    face,
    gone,
    question_wav_seconds,
    spoken_question_wav,
    start_gateway,
    until,
    wait_streams_free,
)

QUESTION = "Tell me about the weather today."


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


@pytest.fixture(scope="module")
def gateway(url):
    proc, page = start_gateway(url)
    yield page
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    assert "Traceback" not in out, out[-3000:]


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory) -> Path:
    return spoken_question_wav(tmp_path_factory.mktemp("mic") / "question.wav", QUESTION)


def test_the_page_shows_a_talking_face_answers_typed_and_spoken_questions_and_can_be_cut(
        gateway, server, question_wav):
    driver = browser(question_wav)
    try:
        driver.get(gateway)
        until(driver, "window.talk && talk.connected", 30)
        until(driver, "talk.tracks.includes('audio') && talk.tracks.includes('video')", 30)

        driver.execute_script("talk.ask('Tell me a joke.')")
        until(driver, "talk.firstFrameMs.length >= 1")  # a decoded frame of the reply was shown
        until(driver, "document.getElementById('face').videoWidth > 0")
        first = face(driver)
        time.sleep(0.6)
        second = face(driver)
        middle = first[first.shape[0] // 4: 3 * first.shape[0] // 4, first.shape[1] // 4: 3 * first.shape[1] // 4]
        assert middle.std() > 20, "the face region is flat"  # a portrait, not a black or grey video
        assert np.abs(second - first).mean() > 0.2, "the face did not move between two moments"
        until(driver, "talk.sentences.length >= 1")

        # the fake microphone loops the question from a point of its own: two loops hold one whole
        loop_ms = int(question_wav_seconds(question_wav) * 1000)
        driver.execute_script(f"talk.hold({2 * loop_ms})")
        heard = until(driver, "talk.heard.length >= 1 && talk.heard[0]")
        # most of its words, not all: Opus over a starved CPU may blur one ("Who are you?" was once
        # heard as "Hey, where are you?"), a question that never reached Whisper shares none
        assert len(words(heard) & words(QUESTION)) >= 4 and "weather" in words(heard), heard
        until(driver, "talk.sentences.some((s) => s.reply === talk.reply && talk.heard.length)")

        driver.get(gateway)  # a new conversation (the starter LLM tells its story only without history)
        until(driver, "window.talk && talk.connected", 30)
        driver.execute_script("talk.ask('Tell me a long story.')")  # ten sentences
        long_reply = until(driver, "talk.sentences.length && talk.sentences[talk.sentences.length - 1].reply")
        until(driver, f"talk.sentences.filter((s) => s.reply === {long_reply}).length >= 1")
        driver.execute_script("talk.ask('Thanks.')")  # spoken over it: the story stops
        until(driver, f"talk.sentences.some((s) => s.reply > {long_reply})")
        time.sleep(3)
        told = driver.execute_script(f"return talk.sentences.filter((s) => s.reply === {long_reply}).length")
        assert told < 10, "the story went on after it was cut"
        assert not driver.execute_script("return talk.errors"), driver.execute_script("return talk.errors")
        assert driver.execute_script("return talk.passthrough"), "the browser took no H.264: frames were re-encoded"

        driver.execute_script("talk.ask('Tell me a long story.')")  # and then the browser disappears mid-reply
        until(driver, "talk.sentences.some((s) => s.text.startsWith('Once upon a time'))")
    finally:
        gone(driver)
    wait_streams_free(server, timeout=30)  # the gateway noticed and the server freed the slot
