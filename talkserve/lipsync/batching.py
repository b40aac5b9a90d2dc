"""Several streams' sentences drawn at once by one `lipsync` instance, each stream's parts in order.

`lipsync` draws every sentence on a thread of its own (its execute returns at once), so a new
stream's first part no longer waits behind another stream's whole sentence. Two pieces make that
safe and cheap, both pure (tested without Triton):

- `Batcher`: the generator is called with the frames of every stream that is waiting on it — one
  call of up to `max_frames` frames instead of one per stream (Wav2Lip on a GPU is far from
  saturated by 25 frames; on a CPU the calls at least stop queueing behind each other). A caller
  whose batch is ready runs it (leader/follower: no extra thread); one call runs at a time.
- `InOrder`: sentence i of a stream starts sending only once sentence i - 1 has finished, so a
  stream's parts leave in order although its sentences run on separate threads — and in separate
  `lipsync` instances (stub processes) when there are several.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkserve.lipsync.frames import Generator
from talkserve.runtime.turns import server_scratch


@dataclass
class _Call:
    mel: np.ndarray
    face: np.ndarray
    at: float = field(default_factory=time.monotonic)
    out: np.ndarray | None = None
    error: BaseException | None = None


class Batcher:
    """A `Generator` that joins concurrent callers' frames into one call of `generator`.

    A batch starts when every sentence inside `drawing()` is waiting on it, when it holds
    `max_frames`, or when its oldest call has waited `window_s`; while one call runs, the next
    callers queue and go together after it."""

    def __init__(self, generator: Generator, max_frames: int = 50, window_s: float = 0.005):
        self.generator, self.max_frames, self.window_s = generator, max_frames, window_s
        self.cv = threading.Condition()
        self.pending: list[_Call] = []
        self.active = 0  # sentences that may still call
        self.running = False
        self.calls = 0  # generator calls made (batches)
        self.frames = 0  # frames they drew
        self.pace: float | None = None  # frames per second of the generator's calls lately
        self.freed = 0.0  # when the last call ended: callers that queued behind it wait the window from then

    def drawing(self) -> _Drawing:
        """Context for a sentence that will call the batcher: the batch need not wait for others'."""
        return _Drawing(self)

    def _ready(self, now: float) -> bool:
        if self.running or not self.pending:
            return False
        frames = sum(len(c.mel) for c in self.pending)
        everyone = len(self.pending) >= self.active
        return everyone or frames >= self.max_frames or now - self._since() >= self.window_s

    def _since(self) -> float:
        # from the end of the call they queued behind: the sentence it just served pastes, sends and
        # comes back within the window, so two sentences join instead of taking turns
        return max(self.pending[0].at, self.freed)

    def _take(self) -> list[_Call]:
        batch, frames = [], 0
        while self.pending and (not batch or frames + len(self.pending[0].mel) <= self.max_frames):
            call = self.pending.pop(0)
            batch.append(call)
            frames += len(call.mel)
        return batch

    def _run(self, batch: list[_Call]) -> None:
        try:
            started = time.monotonic()
            out = self.generator(np.concatenate([c.mel for c in batch]), np.concatenate([c.face for c in batch]))
            pace = len(out) / max(time.monotonic() - started, 1e-6)
            self.pace = pace if self.pace is None else 0.7 * self.pace + 0.3 * pace
            ends = np.cumsum([len(c.mel) for c in batch])
            for c, part in zip(batch, np.split(out, ends[:-1]), strict=True):
                c.out = part
        except BaseException as e:  # each caller gets the batch's error
            for c in batch:
                c.error = e

    def __call__(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        call = _Call(mel, face)
        with self.cv:
            self.pending.append(call)
            self.cv.notify_all()
            while call.out is None and call.error is None:
                now = time.monotonic()
                if self._ready(now):
                    batch, self.running = self._take(), True
                    self.cv.release()
                    try:
                        self._run(batch)
                    finally:
                        self.cv.acquire()
                        self.running, self.freed = False, time.monotonic()
                        self.calls += 1
                        self.frames += sum(len(c.mel) for c in batch)
                        self.cv.notify_all()
                else:
                    wait = self.window_s - (now - self._since()) if self.pending and not self.running else None
                    self.cv.wait(timeout=max(wait, 1e-4) if wait is not None else 0.05)
        if call.error is not None:
            raise call.error
        return call.out


class _Drawing:
    def __init__(self, batcher: Batcher):
        self.b = batcher

    def __enter__(self) -> None:
        with self.b.cv:
            self.b.active += 1

    def __exit__(self, *exc) -> None:
        with self.b.cv:
            self.b.active -= 1
            self.b.cv.notify_all()  # a batch waiting for this sentence need not wait any more


class Seats:
    """How many sentences one instance draws with the generator at once: as many as its measured pace
    keeps in real time, at least one. Sentences beyond that would all fall behind together (two
    Wav2Lip sentences on a generator that draws 24 frames/s get 12 each, against 25 played), so the
    rest go to the cheaper mouth whole, while the seated ones keep the generator's full pace."""

    def __init__(self, batcher: Batcher, video_fps: float):
        self.batcher, self.video_fps = batcher, video_fps
        self.lock = threading.Lock()
        self.taken = 0

    def limit(self) -> int:
        pace = self.batcher.pace
        return 1 if pace is None else max(1, int(pace / self.video_fps))

    def take(self) -> bool:
        """A seat for a sentence, if one is free (then `give` it back when the sentence leaves the generator)."""
        with self.lock:
            if self.taken >= self.limit():
                return False
            self.taken += 1
            return True

    def give(self) -> None:
        with self.lock:
            self.taken -= 1


class InOrder:
    """Per key (a stream), sentence `index` waits until sentence `index - 1` has finished — whichever
    `lipsync` instance (stub process) drew it: a finished sentence is a marker file under `root`
    (the server's scratch, as talkserve.runtime.turns), so order is per stream, not per instance.

    Markers are forgotten `forget_s` after they were written. A key of "" has no order to keep
    (requests from no stream and no conversation): those sentences run one at a time in this
    instance, as a single instance ran everything before."""

    def __init__(self, root: Path | None = None, timeout_s: float = 60.0, forget_s: float = 600.0,
                 poll_s: float = 0.02):
        self.root = root or server_scratch("order")
        self.root.mkdir(parents=True, exist_ok=True)
        self.timeout_s, self.forget_s, self.poll_s = timeout_s, forget_s, poll_s
        self.cv = threading.Condition()  # wakes this instance's waiters at once; `poll_s` finds the others'
        self.unkeyed = threading.Lock()
        self.swept = time.monotonic()

    def _marker(self, key: str, index: int) -> Path:
        return self.root / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.{index}"

    def wait(self, key: str, index: int, live: Callable[[], bool] = lambda: True) -> bool:
        """Block until `index` may start; False if it gave up (timeout, or `live()` turned false)."""
        if key == "":
            return self.unkeyed.acquire(timeout=self.timeout_s)
        if index <= 0:
            return True
        before = self._marker(key, index - 1)
        asked = time.monotonic()
        deadline = asked + self.timeout_s
        while not before.exists():
            now = time.monotonic()
            if now >= deadline:
                return False
            if now - asked >= 0.1:  # live() is a call into the server: not on every poll
                if not live():  # outside the condition's lock: live() may wait on locks of its own
                    return False
                asked = now
            with self.cv:
                if not before.exists():
                    self.cv.wait(timeout=self.poll_s)
        return True

    def finished(self, key: str, index: int, waited: bool) -> None:
        """Sentence `index` of `key` sent its last part (or will send none); `waited`: what wait() said."""
        if key == "":
            if waited:
                self.unkeyed.release()
            return
        self._marker(key, index).touch()
        with self.cv:
            self.cv.notify_all()
        if time.monotonic() - self.swept > 60:
            self._forget_old()

    def _forget_old(self) -> None:
        self.swept, cutoff = time.monotonic(), time.time() - self.forget_s
        for f in self.root.iterdir():
            with contextlib.suppress(FileNotFoundError):  # another instance forgot it first
                if f.stat().st_mtime < cutoff:
                    f.unlink()
