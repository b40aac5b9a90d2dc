"""Barge-in across the python models: which turn of a conversation is current.

A request may name a `conversation_id`. Starting a reply in a conversation (llm) or cancelling it
(`cancel` model) bumps that conversation's turn number; every stage that works for a reply (the
llm's token loop, tts, lipsync before each part) asks whether its turn is still current and stops
if not. Triton's own cancellation reaches an ensemble's steps only when they are scheduled, not
while they run (server issue #6739), so a running lipsync sentence would otherwise play on.

The models run in separate stub processes, so the state is one small file per conversation under
a directory private to this tritonserver process (its pid), in /dev/shm when there is one.
Writes are atomic renames; a read is one small file read, cheap enough for every token.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

NO_TURN = ""  # requests without a conversation_id cannot be superseded
IDLE_SECONDS = 3600  # a conversation untouched this long is forgotten


def scratch_base() -> Path:
    return Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


def server_scratch(kind: str, server_pid: int | None = None) -> Path:
    """A path private to one tritonserver process, shared by its python stubs (whose parent it is)
    and by `talkserve` commands that know its pid; in /dev/shm when there is one."""
    return scratch_base() / f"talkserve-{kind}-{server_pid or os.getppid()}"


def remove_scratch(server_pid: int) -> None:
    """Everything a tritonserver's stubs kept in scratch (turns, the drain flag): once it has exited."""
    for path in scratch_base().glob(f"talkserve-*-{server_pid}"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def remove_stale_scratch() -> list[int]:
    """Scratch of tritonservers that are gone (killed before they could clean up); the pids removed."""
    gone = []
    for path in scratch_base().glob("talkserve-*-*"):
        pid = path.name.rsplit("-", 1)[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            remove_scratch(int(pid))
            gone.append(int(pid))
    return gone


class Turns:
    def __init__(self, root: Path | None = None):
        self.root = root or server_scratch("turns")
        self.root.mkdir(parents=True, exist_ok=True)

    def _file(self, conversation: str) -> Path:
        return self.root / hashlib.sha256(conversation.encode()).hexdigest()[:32]

    def _read(self, conversation: str) -> int:
        try:
            return int(self._file(conversation).read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _bump(self, conversation: str) -> int:
        # Turn numbers only need to be unique and rising: nanoseconds since the epoch are both,
        # without a read-modify-write race between two stubs.
        n = max(self._read(conversation) + 1, time.time_ns())
        tmp = self.root / f".{os.getpid()}.{n}"
        tmp.write_text(str(n))
        os.replace(tmp, self._file(conversation))
        return n

    def start(self, conversation: str) -> str:
        """A new reply in `conversation` (superseding any reply still streaming); its turn token."""
        if not conversation:
            return NO_TURN
        self._forget_idle()
        return f"{self._bump(conversation)}:{conversation}"

    def cancel(self, conversation: str) -> None:
        """Stop whatever reply `conversation` has streaming."""
        if conversation:
            self._bump(conversation)

    def _forget_idle(self) -> None:
        cutoff = time.time() - IDLE_SECONDS
        for f in self.root.iterdir():
            try:
                if f.stat().st_mtime < cutoff:
                    f.unlink()
            except FileNotFoundError:  # another stub forgot it first
                pass

    def is_current(self, turn: str) -> bool:
        if turn == NO_TURN:
            return True
        number, _, conversation = turn.partition(":")
        return self._read(conversation) == int(number)
