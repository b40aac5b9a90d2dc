"""Generation loop over a one-step decoder with an explicit KV cache, streaming sentences.

The step is any callable with the `DecoderStep` contract on NumPy arrays: an ONNX Runtime
session in tests, a Triton BLS call to `llm_decoder` when served. Greedy decoding: replies are
deterministic for a given model, which the tests and quality gates rely on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from talkserve.runtime.prefix_cache import Lookup, PrefixCache
from talkserve.spec import KVLayout
from talkserve.text import SentenceStream

Step = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
Clean = Callable[[str], str | None]  # a sentence as spoken, or None to drop it


@dataclass
class Sentence:
    text: str
    index: int


_SYSTEM_ROLE: dict[str, bool] = {}  # chat template → renders a system message; asked once per template


def has_system_role(tokenizer) -> bool:
    """Whether the chat template renders a system message (the starter's drops it)."""
    template = str(tokenizer.chat_template)
    if template not in _SYSTEM_ROLE:
        probe = "\x1fsystem-probe\x1f"
        try:
            rendered = tokenizer.apply_chat_template(
                [{"role": "system", "content": probe}, {"role": "user", "content": "hi"}], tokenize=False)
            _SYSTEM_ROLE[template] = probe in rendered
        except Exception:  # some templates raise on a system message (jinja's raise_exception)
            _SYSTEM_ROLE[template] = False
    return _SYSTEM_ROLE[template]


def prompt_ids(tokenizer, user_text: str, system: str = "", history: list[dict[str, str]] | None = None) -> list[int]:
    """Token ids of the chat prompt (the model's own chat template when it has one): `history`
    (earlier user/assistant turns) then the new user text; `system` (e.g. an emotion's
    instruction) goes in as a system message where the template has that role."""
    history = history or []
    if getattr(tokenizer, "chat_template", None):
        messages = [*history, {"role": "user", "content": user_text}]
        if system and has_system_role(tokenizer):
            messages.insert(0, {"role": "system", "content": system})
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    lines = [system] if system else []
    lines += [t["content"] for t in history] + [user_text]
    return tokenizer.encode("\n".join(lines))


@dataclass
class Shaping:
    """How a reply is shaped for speaking (the served `llm`'s recipe knobs)."""

    repetition_penalty: float = 1.0  # > 1: tokens the reply already used score lower (CTRL's rule); greedy stays
    max_sentences: int = 0  # stop generating after this many sentences; 0 = no limit
    clean: Clean | None = None  # sees each sentence before it leaves: may change it or drop it (None)


def penalise(logits: np.ndarray, used: list[int], penalty: float) -> np.ndarray:
    """CTRL's repetition penalty on one row of logits: a used token's positive logit is divided by
    `penalty`, a negative one multiplied. Small greedy LLMs otherwise loop on one sentence."""
    if penalty == 1.0 or not used:
        return logits
    logits = logits.copy()
    seen = np.unique(np.asarray(used))
    logits[seen] = np.where(logits[seen] > 0, logits[seen] / penalty, logits[seen] * penalty)
    return logits


def generate_tokens(step: Step, layout: KVLayout, ids: list[int], max_new_tokens: int,
                    eos_ids: set[int], cache: PrefixCache | None = None,
                    repetition_penalty: float = 1.0) -> Iterator[int]:
    """Greedy decoding: one prefill pass over the prompt (only past its longest cached prefix),
    then one pass per new token. When the loop ends, however it ends (the reply done, or cut by a
    barge-in), the cache keeps the KV of everything fed: the next turn's prompt starts with this
    prompt and, re-rendered, the reply's text."""
    hit = cache.lookup(ids) if cache is not None else Lookup(0, None)
    past = hit.past  # None: an empty cache
    fed = list(ids[: hit.tokens])  # the tokens `past` covers
    new = np.asarray([ids[hit.tokens:]], np.int64)  # (1, S)
    reply: list[int] = []
    try:
        for _ in range(max_new_tokens):
            out = step(layout.feeds(new, past, len(fed)))
            fed += new[0].tolist()
            past = {name: out[p] for name, p in zip(layout.past_names(), layout.present_names(), strict=True)}
            token = int(np.argmax(penalise(out["logits"][0, -1], reply, repetition_penalty)))
            if token in eos_ids:
                break
            reply.append(token)
            yield token
            new = np.asarray([[token]], np.int64)
    finally:
        if cache is not None and past is not None and len(fed) > hit.tokens:
            cache.put(fed, past)


def stream_sentences(step: Step, layout: KVLayout, tokenizer, user_text: str, max_new_tokens: int,
                     system: str = "", history: list[dict[str, str]] | None = None,
                     cache: PrefixCache | None = None, shaping: Shaping | None = None) -> Iterator[Sentence]:
    """Yield each sentence of the reply as soon as its last token is generated."""
    ids = prompt_ids(tokenizer, user_text, system, history)
    return stream_reply(step, layout, tokenizer, ids, max_new_tokens, cache, shaping)


def stream_reply(step: Step, layout: KVLayout, tokenizer, ids: list[int], max_new_tokens: int,
                 cache: PrefixCache | None = None, shaping: Shaping | None = None) -> Iterator[Sentence]:
    """The reply to the prompt `ids`, sentence by sentence, shaped for speech (`Shaping`). A sentence
    the token budget cut off is not spoken, unless it would be the whole reply (a voice that stops
    mid-phrase sounds broken), and neither is a sentence the reply already said."""
    shaping = shaping or Shaping()
    eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    generated: list[int] = []
    said: set[str] = set()
    text_so_far = ""
    splitter = SentenceStream()

    def say(sentence: str) -> Iterator[Sentence]:
        text = shaping.clean(sentence) if shaping.clean is not None else sentence
        if text and text not in said:
            said.add(text)
            yield Sentence(text, len(said) - 1)

    def enough() -> bool:
        return 0 < shaping.max_sentences <= len(said)

    tokens = generate_tokens(step, layout, ids, max_new_tokens, eos, cache, shaping.repetition_penalty)
    try:
        for token in tokens:
            generated.append(token)
            # Decode the whole reply and diff: byte-level BPE pieces are not valid text on their own.
            text = tokenizer.decode(generated, skip_special_tokens=True)
            if text.endswith("\ufffd"):
                continue
            piece, text_so_far = text[len(text_so_far):], text
            for sentence in splitter.feed(piece):
                yield from say(sentence)
                if enough():
                    return
        cut = len(generated) >= max_new_tokens  # the budget ended it, not the model
        for sentence in splitter.flush():
            if not cut or not said:
                yield from say(sentence)
    finally:
        tokens.close()  # stops the loop (and stores its KV) when the reply ends early
