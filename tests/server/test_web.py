"""`talkserve web` in a real browser: Debian's Chromium, headless, with a fake camera/microphone that
plays a spoken question (tests/browser.sh installs chromium and chromium-driver; CI runs it)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import wait_streams_free

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gateway(url):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "talkserve.cli", "web", "--url", url, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    page = f"http://127.0.0.1:{port}/"
    for _ in range(200):
        try:
            urllib.request.urlopen(page, timeout=1).read()
            break
        except OSError:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.1)
    yield page
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    assert "Traceback" not in out, out[-3000:]


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory) -> Path:
    """The microphone's loop: "Who are you?" (Piper) between two seconds of silence each side, so that a
    hold of one loop from where the page thinks a loop starts holds the whole question, give or take
    where the fake device really started it."""
    import wave

    from talkserve.models.piper_tts import PiperTTS
    from talkserve.recipe import TTSRecipe

    tts = PiperTTS(*TTSRecipe().resolved_paths(), noise_scale=0.0, noise_w_scale=0.0)
    from scipy.signal import resample_poly

    speech = resample_poly(tts.synthesize("Who are you?"), 320, 147)  # 22.05 → 48 kHz: Chromium's fake
    pad = np.zeros(2 * 48_000, np.float32)  # device plays a file at its own rate, whatever the file's header says
    pcm = (np.clip(np.concatenate([pad, speech, pad]), -1, 1) * 32767).astype(np.int16)
    path = tmp_path_factory.mktemp("mic") / "question.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(48_000)
        w.writeframes(pcm.tobytes())
    return path


def question_wav_seconds(path: Path) -> float:
    import wave

    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def browser(wav: Path):
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "run tests/browser.sh (installs chromium, chromium-driver)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required",
                 "--window-size=640,900"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def until(driver, script: str, timeout: float = 120.0):
    """Poll a JavaScript expression until it is truthy; its value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := driver.execute_script(f"return {script}"):
            return value
        time.sleep(0.1)
    raise AssertionError(f"{script} still false after {timeout}s; page state: "
                         f"{driver.execute_script('return JSON.stringify(window.talk)')}")


def gone(driver) -> None:
    """The browser disappears without a goodbye, as a crashed tab or a lost laptop does."""
    import contextlib

    import psutil

    driver_process = psutil.Process(driver.service.process.pid)
    for child in driver_process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    driver_process.kill()
    with contextlib.suppress(Exception):
        driver.quit()


def face(driver) -> np.ndarray:
    """The video element as the browser paints it (a screenshot of it), grey levels."""
    import cv2

    png = driver.find_element("id", "face").screenshot_as_png
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE).astype(np.float32)


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

        loop_ms = int(question_wav_seconds(question_wav) * 1000)  # the microphone loops "Who are you?"
        driver.execute_script(f"talk.holdLoop({loop_ms})")
        heard = until(driver, "talk.heard.length >= 1 && talk.heard[0]")
        assert "who are you" in heard.lower(), heard
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
