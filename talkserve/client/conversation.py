"""Client-side conversation memory: the server is stateless (any replica can answer any turn),
so the client keeps the history and sends it with each request.

An interrupted reply (barge-in, a cancel, a broken stream) goes into the history as far as it was
actually streamed: the sentences of which at least one part reached the caller (who then came
back for more, or the stream ended), not what the server generated. Saved as JSON (`save`/`load`)
for `talkserve say --conversation NAME`.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from talkserve.client.chunk import Chunk
from talkserve.client.inputs import History

if TYPE_CHECKING:
    from talkserve.client.talk import TalkClient


class Conversation:
    """One conversation's id and history. `client` is the default TalkClient; a call may pass
    another (a thread streaming a reply on its own channel)."""

    def __init__(self, client: TalkClient | None, avatar_id: str, conversation_id: str | None = None,
                 history: History | None = None, max_turns: int = 8):
        self.client, self.avatar_id = client, avatar_id
        self.id = conversation_id or uuid.uuid4().hex
        self.history: History = list(history or [])
        self.max_turns = max_turns  # messages sent with a request: the most recent, whole exchanges

    def recent(self) -> History:
        keep = self.max_turns - self.max_turns % 2
        return self.history[-keep:] if keep else []

    def say(self, text: str, client: TalkClient | None = None, **kw) -> Iterator[Chunk]:
        """Stream the reply to `text`; the turn is recorded when the stream ends, however it ends."""
        stream = (client or self.client).stream(text, self.avatar_id, conversation_id=self.id,
                                                history=self.recent(), **kw)
        return self._recording(stream, text)

    def say_voice(self, audio: np.ndarray, sample_rate: int, client: TalkClient | None = None, **kw
                  ) -> Iterator[Chunk]:
        """As `say`, from an utterance: the user's turn is what the server heard."""
        stream = (client or self.client).stream_voice(audio, sample_rate, self.avatar_id, conversation_id=self.id,
                                                      history=self.recent(), **kw)
        return self._recording(stream, None)

    def _recording(self, stream: Iterator[Chunk], user_text: str | None) -> Iterator[Chunk]:
        heard: list[str] = []
        try:
            for chunk in stream:
                user_text = chunk.user_text if chunk.user_text is not None else user_text
                yield chunk
                if chunk.part == 0:  # the caller took it and came back for more: it was shown
                    heard.append(chunk.text)
        finally:
            self.record(user_text, heard)

    def record(self, user_text: str | None, streamed_sentences: list[str]) -> None:
        """Add one exchange; nothing when no sentence of the reply reached the client (the
        history alternates user/assistant, and an unanswered question is not part of it)."""
        if user_text and streamed_sentences:
            self.history += [{"role": "user", "content": user_text},
                             {"role": "assistant", "content": " ".join(streamed_sentences)}]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"id": self.id, "avatar_id": self.avatar_id, "history": self.history},
                                  ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, path)  # a crash never leaves half a conversation behind

    @classmethod
    def load(cls, client: TalkClient | None, path: Path, avatar_id: str, max_turns: int = 8) -> Conversation:
        """The saved conversation at `path`, or a new one when there is none yet."""
        if not path.exists():
            return cls(client, avatar_id, path.stem, None, max_turns)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(client, avatar_id, data["id"], data["history"], max_turns)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a saved conversation ({e})") from None
