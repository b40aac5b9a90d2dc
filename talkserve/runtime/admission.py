"""Admission control: at most `max_streams` replies run at once in one tritonserver.

A reply is a stream that lives from its entry model (`admit`, talking_head's first step, or `asr`,
talking_head_voice's) until `lipsync` has drawn its last sentence — long after the `llm` loop has
finished writing the text. So the slot is a small lease directory, shared by the stub processes
like the turns are:

    talkserve-streams-<server pid>/<stream id>/
        conversation  the request's conversation (hashed), if it named one
        claimed       written by llm when the reply reaches it
        total         written by llm when its loop ends: how many sentences it streamed
        done-<i>      written by lipsync when sentence i is drawn (or stopped, or had no speech)
        kept-clock    lipsync: the client's playback clock, for whichever instance draws the next sentence

The stream ends (its directory goes) once `total` is written and every sentence is done, whichever
stage gets there last. A lease nobody has touched for `lease_seconds` (a stage died mid-reply) stops
counting, so a crash cannot shrink the server's capacity for good; one that llm has not claimed
within `claim_seconds` stops counting too (the entry model was called on its own — asr transcribing
for a client — or the reply died before llm), while llm waiting longer to claim it only lets one
more reply in. Admission itself takes a file lock, so two entry-model instances cannot both take
the last slot. A new reply in a conversation that already holds a slot (barge-in) is not counted
against it: it supersedes that reply, which stops.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from talkserve.runtime.turns import server_scratch
from talkserve.text import OVERLOADED_MESSAGE

NO_STREAM = ""  # a request that did not come through an entry model (a model called on its own)
CLAIM_SECONDS = 10.0  # entry model → llm is milliseconds, or a queue behind llm's busy instances


class Overloaded(RuntimeError):
    """The server already runs `limit` streams (→ UNAVAILABLE, read by clients as RESOURCE_EXHAUSTED)."""

    def __init__(self, limit: int):
        super().__init__(f"{OVERLOADED_MESSAGE} (serving.max_streams = {limit}); retry on another replica")
        self.limit = limit


class Streams:
    def __init__(self, root: Path | None = None, lease_seconds: float = 60.0, claim_seconds: float = CLAIM_SECONDS):
        self.root = root or server_scratch("streams")
        self.root.mkdir(parents=True, exist_ok=True)
        self.lease_seconds, self.claim_seconds = lease_seconds, claim_seconds

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def _leases(self) -> Iterator[Path]:
        return (p for p in self.root.iterdir() if p.is_dir())

    @staticmethod
    def _age(lease: Path, now: float) -> float | None:
        """Seconds since the lease was last touched; None once it has ended."""
        try:
            return now - lease.stat().st_mtime
        except FileNotFoundError:  # ended while we looked
            return None

    def _alive(self, lease: Path, now: float) -> bool:
        age = self._age(lease, now)
        return age is not None and age < self.lease_seconds

    def _counts(self, lease: Path, now: float) -> bool:
        age = self._age(lease, now)  # one stat: leases are counted on every admission
        if age is None or age >= self.lease_seconds:
            return False
        return age < self.claim_seconds or (lease / "claimed").exists()

    def active(self, besides: str = "") -> int:
        """Live streams, not counting those of conversation `besides` (hashed)."""
        now = time.time()
        return sum(self._counts(p, now) and not (besides and _conversation_of(p) == besides) for p in self._leases())

    def admit(self, limit: int, conversation: str = "") -> str:
        """A new stream's id, or Overloaded when `limit` streams (of other conversations) are running."""
        key = hashlib.sha256(conversation.encode()).hexdigest()[:32] if conversation else ""
        with self._locked():
            now = time.time()
            for lease in self._leases():
                if not self._alive(lease, now):  # a stage died mid-reply: free its slot
                    shutil.rmtree(lease, ignore_errors=True)
            if self.active(besides=key) >= limit:
                raise Overloaded(limit)
            stream = uuid.uuid4().hex
            (self.root / stream).mkdir()
            if key:
                (self.root / stream / "conversation").write_text(key)
            return stream

    def _lease(self, stream: str) -> Path | None:
        if stream == NO_STREAM or not stream.isalnum():
            return None
        lease = self.root / stream
        return lease if lease.is_dir() else None

    def running(self, stream: str) -> bool:
        """Whether `stream` still holds its slot (not every sentence drawn yet)."""
        return self._lease(stream) is not None

    def claim(self, stream: str) -> None:
        """llm: the reply has reached generation (it counts until it ends or its lease lapses)."""
        self._mark(stream, "claimed", "")

    def release(self, stream: str) -> None:
        """The reply failed before any stage that would end it saw it: free its slot now."""
        if (lease := self._lease(stream)) is not None:
            shutil.rmtree(lease, ignore_errors=True)

    def touch(self, stream: str) -> None:
        """The stream is making progress (renews its lease)."""
        if (lease := self._lease(stream)) is not None:
            with contextlib.suppress(FileNotFoundError):
                os.utime(lease)

    def running_streams(self) -> list[str]:
        return [p.name for p in self._leases()]

    def keep(self, stream: str, name: str, text: str) -> None:
        """A stage's note on a running stream, read by any instance and gone with the stream."""
        if (lease := self._lease(stream)) is None:
            return
        with contextlib.suppress(FileNotFoundError):  # the stream ended meanwhile
            tmp = lease / f".{name}.{os.getpid()}.{time.monotonic_ns()}"
            tmp.write_text(text)
            os.replace(tmp, lease / f"kept-{name}")

    def kept(self, stream: str, name: str) -> str | None:
        if stream == NO_STREAM or not stream.isalnum():
            return None
        try:
            return (self.root / stream / f"kept-{name}").read_text()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def sent(self, stream: str, sentences: int) -> None:
        """llm: the loop has ended after streaming `sentences` sentences (0: it failed or was stopped first)."""
        self._mark(stream, "total", str(sentences))

    def done(self, stream: str, index: int) -> None:
        """lipsync: sentence `index` is finished with (drawn, stopped or silent)."""
        self._mark(stream, f"done-{index}", "")

    def _mark(self, stream: str, name: str, text: str) -> None:
        if (lease := self._lease(stream)) is None:
            return
        try:
            tmp = lease / f".{name}.{os.getpid()}"
            tmp.write_text(text)
            os.replace(tmp, lease / name)
            os.utime(lease)
        except FileNotFoundError:  # the other stage ended the stream first
            return
        self._end_if_finished(lease)

    @staticmethod
    def _end_if_finished(lease: Path) -> None:
        try:
            total = int((lease / "total").read_text())
            done = sum(1 for p in lease.iterdir() if p.name.startswith("done-"))
        except (FileNotFoundError, ValueError):
            return
        if done >= total:
            shutil.rmtree(lease, ignore_errors=True)


def _conversation_of(lease: Path) -> str:
    try:
        return (lease / "conversation").read_text()
    except FileNotFoundError:
        return ""
