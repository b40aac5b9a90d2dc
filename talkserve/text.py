"""Text handling for the request contract: validation and sentence streaming."""

from __future__ import annotations

import re
import unicodedata

MAX_TEXT_CHARS = 1000
# A sentence ends at . ! ? (or CJK 。！？) and closing quotes once whitespace follows: while text is
# still streaming in, "3." may become "3.5", so the end of the buffer never ends a sentence.
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])[\"')\]]*(?=\s)")


class RequestError(ValueError):
    """Bad input; `field` names the request tensor at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def decode_text(raw: bytes, field: str = "text", max_chars: int = MAX_TEXT_CHARS,
                allow_empty: bool = False) -> str:
    """UTF-8 bytes → normalised text, or RequestError naming the field."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(field, f"not valid UTF-8 (byte {e.start})") from None
    text = unicodedata.normalize("NFC", text).strip()
    if "\x00" in text:
        raise RequestError(field, "contains a NUL character")
    if not text and not allow_empty:
        raise RequestError(field, "is empty")
    if len(text) > max_chars:
        raise RequestError(field, f"is {len(text)} characters, the limit is {max_chars}")
    return text


def decode_choice(raw: bytes | str | None, field: str, choices, default: str) -> str:
    """An optional request field naming one of `choices` (absent or empty = `default`), case-insensitive."""
    if raw is None:
        return default
    name = (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw).strip().lower() or default
    if name not in choices:
        raise RequestError(field, f"{name!r} is not one of {', '.join(choices)}")
    return name


def split_sentences(text: str) -> tuple[list[str], str]:
    """Complete sentences at the front of `text`, and the unfinished rest."""
    sentences, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        sentence = text[start : m.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = m.end()
    return sentences, text[start:]


class SentenceStream:
    """Feed decoded text as it is generated; take back each sentence as soon as it is complete."""

    def __init__(self) -> None:
        self.buffer = ""

    def feed(self, piece: str) -> list[str]:
        self.buffer += piece
        done, self.buffer = split_sentences(self.buffer)
        return done

    def flush(self) -> list[str]:
        rest, self.buffer = self.buffer.strip(), ""
        return [rest] if rest else []


ROLES = ("user", "assistant")
# What a draining server answers a new reply with (talkserve.runtime.drain); the client recognises it by this
# text where the transport dropped the gRPC code, so it lives here, on the side both import.
DRAINING_MESSAGE = "server is draining for shutdown; retry on another replica"
# What a server at its stream limit answers (talkserve.runtime.admission): gRPC RESOURCE_EXHAUSTED to the client.
OVERLOADED_MESSAGE = "server is at its stream limit"
MAX_HISTORY_MESSAGES = 32


def decode_history(raw: bytes, max_messages: int = MAX_HISTORY_MESSAGES, max_chars: int = MAX_TEXT_CHARS
                   ) -> list[dict[str, str]]:
    """The `history` field: UTF-8 JSON, a list of {"role", "content"} turns, user and assistant
    alternating from a user turn to an assistant turn (the new `text` is the next user turn).
    Raises RequestError naming `history` and what is wrong with it."""
    import json

    try:
        turns = json.loads(raw.decode("utf-8")) if raw.strip() else []
    except UnicodeDecodeError as e:
        raise RequestError("history", f"not valid UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise RequestError("history", f"not JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(turns, list):
        raise RequestError("history", f"must be a JSON list of turns, got {type(turns).__name__}")
    if len(turns) > max_messages:
        raise RequestError("history", f"has {len(turns)} turns, the limit is {max_messages}")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or set(turn) != {"role", "content"}:
            raise RequestError("history", f"turn {i} must be an object with exactly 'role' and 'content'")
        expected = ROLES[i % 2]
        if turn["role"] != expected:
            raise RequestError("history", f"turn {i} has role {turn['role']!r}; turns alternate user, assistant "
                                          f"(starting with user), so it must be {expected!r}")
        if not isinstance(turn["content"], str):
            raise RequestError("history", f"turn {i} content must be a string")
        try:
            content = decode_text(turn["content"].encode("utf-8", "surrogatepass"), "history", max_chars)
        except RequestError as e:
            raise RequestError("history", f"turn {i} content {str(e).removeprefix('history: ')}") from None
        out.append({"role": expected, "content": content})
    if len(out) % 2:
        raise RequestError("history", "must end with an assistant turn (the new text is the next user turn)")
    return out
