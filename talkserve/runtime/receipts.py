"""Read receipts: a reader that stops reading costs the server a bounded number of parts.

Triton 2.51 tells a python model nothing about its client's reading: what `lipsync` sends waits in
the gRPC frontend for as long as the reader does not read (measured: +87 MB per stalled reader,
fp32, and not returned after it leaves). A client that opts in names a flow (`receipts` request
field) and acknowledges the parts it has taken, with a small request to the `ack` model; `lipsync`
then computes the next part only while fewer than `window` parts of that flow are unacknowledged,
and gives the reply up when nothing is acknowledged for `timeout_s` (the reader left or hung).
So a stalled reader holds at most `window` parts in the server, and none once it is given up.
A reader that leaves early (its deadline passed, it closed the reply) says so (`cancel` with the
flow): the reply stops at its next part rather than holding its stream slot for `timeout_s`.

The stubs are separate processes (and `lipsync` may run several instances, each drawing any of a
reply's sentences): small files per flow under the server's scratch directory (as talkserve.runtime.turns),
written by atomic rename — what the reader acknowledged, what was sent, whether it left.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from talkserve.runtime.turns import server_scratch

IDLE_SECONDS = 600  # a flow untouched this long is forgotten


class ReaderGone(Exception):
    """A reader acknowledged nothing for the flow's timeout: its reply is given up."""


class Receipts:
    def __init__(self, root: Path | None = None):
        self.root = root or server_scratch("receipts")
        self.root.mkdir(parents=True, exist_ok=True)

    def _file(self, flow: str) -> Path:
        return self.root / hashlib.sha256(flow.encode()).hexdigest()[:32]

    @staticmethod
    def _read(path: Path) -> int:
        try:
            return int(path.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def acknowledged(self, flow: str) -> int:
        return self._read(self._file(flow))

    def leave(self, flow: str) -> None:
        """The reader has left (timed out, closed the reply): the flow's next part is not computed."""
        self._file(flow).with_suffix(".left").touch()

    def left(self, flow: str) -> bool:
        return self._file(flow).with_suffix(".left").exists()

    def sent(self, flow: str) -> int:
        """Parts of `flow` sent so far, by whichever `lipsync` instance drew them."""
        return self._read(self._file(flow).with_suffix(".sent"))

    def note_sent(self, flow: str, parts: int) -> None:
        """`parts` of `flow` sent in all (its sentences are drawn one after another: no two writers)."""
        self._write(self._file(flow).with_suffix(".sent"), parts)

    def _write(self, path: Path, n: int) -> None:
        tmp = self.root / f".{os.getpid()}.{time.monotonic_ns()}"
        tmp.write_text(str(n))
        os.replace(tmp, path)

    def acknowledge(self, flow: str, parts: int) -> None:
        """The reader has taken `parts` parts of `flow` in all (acks may arrive out of order: keep the most)."""
        if parts <= self.acknowledged(flow):
            return
        self._write(self._file(flow), parts)
        self._forget_idle()

    def _forget_idle(self) -> None:
        cutoff = time.time() - IDLE_SECONDS
        for f in self.root.iterdir():
            try:
                if f.stat().st_mtime < cutoff:
                    f.unlink()
            except FileNotFoundError:
                pass

    def wait_for_room(self, flow: str, sent: int, window: int, timeout_s: float,
                      live: Callable[[], bool] = lambda: True, poll_s: float = 0.01) -> bool:
        """Block until fewer than `window` of the `sent` parts are unacknowledged. False if the reply
        stopped meanwhile (`live`) or its reader said it left; ReaderGone after `timeout_s` without a
        new acknowledgement (a reader that left without a word)."""
        if self.left(flow):
            return False
        last, since = self.acknowledged(flow), time.monotonic()
        while sent - last >= window:
            if not live() or self.left(flow):
                return False
            if time.monotonic() - since > timeout_s:
                raise ReaderGone(f"flow {flow[:12]}: {sent - last} parts unread for {timeout_s:.0f} s")
            time.sleep(poll_s)
            now = self.acknowledged(flow)
            if now > last:
                last, since = now, time.monotonic()
        return True
