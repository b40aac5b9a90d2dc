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
