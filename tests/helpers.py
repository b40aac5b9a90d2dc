"""Helpers shared by the server tests (tests/ is on sys.path under pytest's default import mode)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path


def metric(server, name: str, **labels: str) -> float:
    """Sum of a metric's series (those with `labels`) on the server's Prometheus endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.ports.metrics}/metrics", timeout=5) as r:
        lines = r.read().decode().splitlines()
    values = [float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith((name + "{", name + " "))
              and all(f'{k}="{v}"' in line for k, v in labels.items())]
    assert values, f"{name} is not exported"
    return sum(values)


def streams_held(server) -> int:
    """Replies holding a stream slot of `server` now (its admission leases, talkserve.runtime.admission)."""
    from talkserve.runtime.admission import Streams
    from talkserve.runtime.turns import server_scratch

    return Streams(server_scratch("streams", server.proc.pid)).active()


def wait_streams_free(server, timeout: float) -> float:
    """Seconds until no reply holds a stream slot (fails after `timeout`)."""
    start = time.monotonic()
    while (held := streams_held(server)) > 0:
        assert time.monotonic() - start < timeout, f"{held} stream slots still held {timeout}s later"
        time.sleep(0.05)
    return time.monotonic() - start


def wait_idle(server, timeout: float) -> float:
    """Seconds until no request is pending and no generation loop runs (fails after `timeout`)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if metric(server, "nv_inference_pending_request_count") == 0 and \
                metric(server, "talkserve_llm_generations_active") == 0:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"server still busy {timeout}s later")


def edited_copy(current, folder, instances: dict[str, int] | None = None, **changes: dict) -> Path:
    """A copy of the built repository `current` in `folder` with some models' parameters changed,
    e.g. `lipsync={"degrade": {"enabled": False}}`, and instance counts (`instances={"lipsync": 2}`),
    as a build with that recipe would write them."""
    from talkserve.server import repository as repo

    root = Path(folder) / "repository"
    shutil.copytree(Path(current).resolve(), root, symlinks=True)
    for model, params in changes.items():
        repo.update_params(root / model, **params)
    for model, count in (instances or {}).items():
        repo.set_instances(root / model, count)
    return root


def start_serve(repository, ports, *options: str) -> subprocess.Popen:
    """`talkserve serve` as a subprocess on `ports`, returned once Triton answers ready."""
    from talkserve.server.serve import is_ready

    serve = subprocess.Popen([sys.executable, "-m", "talkserve.cli", "serve", "--repository", str(repository),
                              "--grpc-port", str(ports.grpc), "--http-port", str(ports.http),
                              "--metrics-port", str(ports.metrics), *options],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not is_ready(ports):
        if serve.poll() is not None or time.monotonic() > deadline:
            serve.kill()
            raise AssertionError(f"talkserve serve did not become ready: {serve.communicate()[0][-2000:]}")
        time.sleep(0.5)
    return serve


def triton_under(serve: subprocess.Popen) -> int:
    """The tritonserver process `talkserve serve` runs."""
    from talkserve.server.health import processes

    return next(p for p, ppid, argv in processes() if ppid == serve.pid and argv and "tritonserver" in argv[0])


class Collector(threading.Thread):
    """Streams one reply on its own client, recording (arrival time, chunk)."""

    def __init__(self, url: str, text: str, conversation: str, **kw):
        super().__init__(daemon=True)
        self.url, self.text, self.conversation, self.kw = url, text, conversation, kw
        self.got: list[tuple[float, object]] = []
        self.ended_at: float | None = None
        self.first = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        from talkserve.client import TalkClient

        try:
            with TalkClient(self.url) as client:
                for chunk in client.stream(self.text, "sample", conversation_id=self.conversation, **self.kw):
                    self.got.append((time.monotonic(), chunk))
                    self.first.set()
        except Exception as e:  # the test reads it
            self.error = e
        self.ended_at = time.monotonic()
        self.first.set()


LONG_QUESTION = "How does this work?"  # three long sentences: several seconds of video


def held_out_portrait() -> Path:
    """A portrait no training or build ever saw (Grace Hopper, shipped with matplotlib)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def avatar_of(path: Path, name: str):
    """An Avatar from a portrait file, through the real face and landmark detectors."""
    from talkserve.lipsync.avatars import Avatar, decode_image, prepare_portrait

    rgb = decode_image(path.read_bytes(), str(path))
    box, lm = prepare_portrait(rgb, str(path))
    return Avatar(name, rgb, box, lm)


# ---- a real browser (Debian's chromium + chromedriver: tests/browser.sh) for `talkserve web` ----

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def spoken_question_wav(path: Path, text: str) -> Path:
    """A fake microphone's loop: `text` spoken by Piper between two seconds of silence each side (the
    device starts the loop at a point of its own: a hold of two loops holds one whole question).
    Written at 48 kHz: Chromium's fake device plays a file at its own rate, whatever its header says."""
    import wave

    import numpy as np
    from scipy.signal import resample_poly

    from talkserve.models.piper_tts import PiperTTS
    from talkserve.recipe import TTSRecipe

    tts = PiperTTS(*TTSRecipe().resolved_paths(), noise_scale=0.0, noise_w_scale=0.0)
    speech = resample_poly(tts.synthesize(text), 48_000, tts.sample_rate)
    pad = np.zeros(2 * 48_000, np.float32)
    pcm = (np.clip(np.concatenate([pad, speech, pad]), -1, 1) * 32767).astype(np.int16)
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


def face(driver):
    """The video element as the browser paints it (a screenshot of it), grey levels."""
    import cv2
    import numpy as np

    png = driver.find_element("id", "face").screenshot_as_png
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE).astype(np.float32)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gateway(url: str) -> tuple[subprocess.Popen, str]:
    """`talkserve web` against the server at `url`, once its page answers: (process, page address)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "talkserve.cli", "web", "--url", url, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    page = f"http://127.0.0.1:{port}/"
    for _ in range(200):
        try:
            urllib.request.urlopen(page, timeout=1).read()
            return proc, page
        except OSError:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.1)
    raise AssertionError(f"talkserve web did not answer on {page}")
