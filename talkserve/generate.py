"""Generation loop over a one-step decoder with an explicit KV cache, streaming sentences.

The step is any callable with the `DecoderStep` contract on NumPy arrays: an ONNX Runtime
session in tests, a Triton BLS call to `llm_decoder` when served. Greedy decoding: replies are
deterministic for a given model, which the tests and quality gates rely on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from talkserve.models.layout import KVLayout
from talkserve.text import SentenceStream

Step = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


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


def prompt_ids(tokenizer, user_text: str, system: str = "") -> list[int]:
    """Token ids of the chat prompt (the model's own chat template when it has one); `system`
    (e.g. an emotion's instruction) goes in as a system message where the template has that role."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": user_text}]
        if system and has_system_role(tokenizer):
            messages.insert(0, {"role": "system", "content": system})
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    return tokenizer.encode(f"{system}\n{user_text}" if system else user_text)


def empty_cache(layout: KVLayout, batch: int = 1) -> dict[str, np.ndarray]:
    shape = (batch, layout.num_kv_heads, 0, layout.head_dim)
    return {name: np.zeros(shape, np.float32) for name in layout.past_names()}


def generate_tokens(step: Step, layout: KVLayout, ids: list[int], max_new_tokens: int,
                    eos_ids: set[int]) -> Iterator[int]:
    """Greedy decoding: one prefill pass over the prompt, then one pass per new token."""
    past = empty_cache(layout)
    new = np.asarray([ids], np.int64)  # (1, S)
    total = 0
    for _ in range(max_new_tokens):
        seq = new.shape[1]
        feeds = {
            "input_ids": new,
            "attention_mask": np.ones((1, total + seq), np.int64),
            "position_ids": np.arange(total, total + seq, dtype=np.int64)[None],
            **past,
        }
        out = step(feeds)
        total += seq
        token = int(np.argmax(out["logits"][0, -1]))
        if token in eos_ids:
            return
        yield token
        past = {name: out[p] for name, p in zip(layout.past_names(), layout.present_names(), strict=True)}
        new = np.asarray([[token]], np.int64)


def stream_sentences(step: Step, layout: KVLayout, tokenizer, user_text: str,
                     max_new_tokens: int, system: str = "") -> Iterator[Sentence]:
    """Yield each sentence of the reply as soon as its last token is generated."""
    eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    generated: list[int] = []
    text_so_far = ""
    splitter = SentenceStream()
    index = 0
    tokens = generate_tokens(step, layout, prompt_ids(tokenizer, user_text, system), max_new_tokens, eos)
    for token in tokens:
        generated.append(token)
        # Decode the whole reply and diff: byte-level BPE pieces are not valid text on their own.
        text = tokenizer.decode(generated, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            continue
        piece, text_so_far = text[len(text_so_far):], text
        for sentence in splitter.feed(piece):
            yield Sentence(sentence, index)
            index += 1
    for sentence in splitter.flush():
        yield Sentence(sentence, index)
        index += 1
