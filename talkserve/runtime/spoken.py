"""What a digital human may say out loud: each generated sentence is cleaned before it is spoken.

An LLM writes for screens (markdown, emoji, URLs) and, small or pressed off-topic, can produce a
swear word. The voice would read markup symbols aloud and a swear word in front of a customer is
worse than a gap, so before a sentence reaches `tts` (and, through its audio, the video):
- markup: markdown emphasis, headings, list bullets, code ticks, links (their text kept), HTML tags
  and bare URLs are removed;
- emoji: removed (the `emoji` package's list, which follows Unicode's);
- profanity: words that `better-profanity`'s list flags (with its leetspeak variants, whole
  words), and words that contain one of a few strong roots (the starter LLM once babbled
  "Iderfuck"), are removed.
A sentence with nothing speakable left is dropped. What was removed is returned so the served
model can count it (`talkserve_llm_spoken_filter_total{reason}`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

REASONS = ("profanity", "markup", "emoji", "dropped")
# Roots removed even inside a word; kept short, since a longer list hits innocent words (Scunthorpe).
STRONG_ROOTS = ("fuck", "shit")
_CENSORED = "\x00"

_MARKUP = [
    (re.compile(r"\[([^\]]*)\]\([^)]*\)"), r"\1"),  # [text](url) → text
    (re.compile(r"https?://\S+|www\.\S+"), ""),  # bare URLs
    (re.compile(r"<[^>\s][^>]*>"), ""),  # HTML tags
    (re.compile(r"^\s*(#{1,6}\s+|[-*+•]\s+|\d+[.)]\s+(?=\D))", re.M), ""),  # headings, bullets, numbered items
    (re.compile(r"(\*{1,3}|_{2,3}|`{1,3}|~~)"), ""),  # emphasis, code ticks, strike-through
]


@dataclass
class Cleaned:
    text: str | None  # None: nothing speakable left, drop the sentence
    removed: dict[str, int] = field(default_factory=dict)  # reason → how many


@cache
def _profanity():
    from better_profanity import profanity

    profanity.load_censor_words()
    return profanity


def _strip_profanity(text: str) -> tuple[str, int]:
    censored = _profanity().censor(text, _CENSORED)
    words = censored.split(" ")
    n = 0
    for i, word in enumerate(words):
        if _CENSORED in word or any(root in word.lower() for root in STRONG_ROOTS):
            # keep trailing punctuation (the sentence end) of a removed word
            words[i] = re.sub(r"^.*?([.!?,;:…]*)$", r"\1", word.replace(_CENSORED, "x"))
            n += 1
    return " ".join(words), n


def _strip_markup(text: str) -> tuple[str, int]:
    n = 0
    for pattern, replacement in _MARKUP:
        text, k = pattern.subn(replacement, text)
        n += k
    return text, n


def _strip_emoji(text: str) -> tuple[str, int]:
    import emoji

    found = emoji.emoji_count(text)
    return (emoji.replace_emoji(text, "") if found else text), found


def clean_for_speech(sentence: str) -> Cleaned:
    removed: dict[str, int] = {}
    text = sentence
    for reason, strip in [("markup", _strip_markup), ("emoji", _strip_emoji), ("profanity", _strip_profanity)]:
        text, n = strip(text)
        if n:
            removed[reason] = n
    text = re.sub(r"\s+([.!?,;:…])", r"\1", re.sub(r"\s+", " ", text)).strip()
    if not re.search(r"\w", text):
        removed["dropped"] = 1
        return Cleaned(None, removed)
    return Cleaned(text, removed)
