"""What the digital human says out loud: the spoken filter, and sentences the token budget cut."""

from __future__ import annotations

import numpy as np
import pytest

from talkserve.runtime.generate import Shaping, stream_reply
from talkserve.runtime.spoken import clean_for_speech
from talkserve.spec import KVLayout


@pytest.mark.parametrize(("raw", "spoken", "reason"), [
    ("What the fuck is a GPU?", "What the is a GPU?", "profanity"),
    ("You sh1t!", "You!", "profanity"),  # leetspeak, the sentence end kept
    ("Iderfuck inference server.", "inference server.", "profanity"),  # a strong root inside a word
    ("**Pruning** removes *weights*.", "Pruning removes weights.", "markup"),
    ("- First, see [the docs](https://example.com).", "First, see the docs.", "markup"),
    ("`code` is <b>bold</b>.", "code is bold.", "markup"),
    ("Sure! 😀", "Sure!", "emoji"),
])
def test_the_filter_removes_what_must_not_be_spoken(raw, spoken, reason):
    cleaned = clean_for_speech(raw)
    assert cleaned.text == spoken and cleaned.removed[reason] >= 1


@pytest.mark.parametrize("ok", ["Hello there, Scunthorpe.", "Assess the class.", "I like Hell's Kitchen.",
                                "A GPU has thousands of cores.", "你好！"])
def test_the_filter_leaves_ordinary_sentences_alone(ok):
    assert clean_for_speech(ok).text == ok and not clean_for_speech(ok).removed


def test_a_sentence_with_nothing_speakable_is_dropped():
    cleaned = clean_for_speech("🙂 **")
    assert cleaned.text is None and cleaned.removed["dropped"] == 1


class Scripted:
    """A decoder step that 'generates' a fixed text (the starter's tokenizer's ids), for the loop."""

    def __init__(self, tok, text: str, eos: bool = True):
        self.ids = tok.encode(text, add_special_tokens=False) + ([tok.eos_token_id] if eos else [])
        self.layout = KVLayout(num_layers=1, num_kv_heads=1, head_dim=2, vocab_size=len(tok.get_vocab()) + 8)
        self.at = 0

    def __call__(self, feeds):
        s, p = feeds["input_ids"].shape[1], feeds["attention_mask"].shape[1]
        logits = np.zeros((1, s, self.layout.vocab_size), np.float32)
        logits[0, -1, self.ids[min(self.at, len(self.ids) - 1)]] = 1.0
        self.at += 1
        kv = np.zeros((1, 1, p, 2), np.float32)
        return {"logits": logits, "present.0.key": kv, "present.0.value": kv}


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from talkserve.recipe import STARTER_LLM

    return AutoTokenizer.from_pretrained(STARTER_LLM)


def spoken(tok, text: str, budget: int = 200, eos: bool = True, **shaping) -> list[str]:
    step = Scripted(tok, text, eos)
    shape = Shaping(clean=lambda s: clean_for_speech(s).text, **shaping)
    return [s.text for s in stream_reply(step, step.layout, tok, [1, 2, 3], budget, shaping=shape)]


def test_a_bad_word_never_reaches_the_sentences_sent_to_the_voice(tok):
    assert spoken(tok, "Hello there. What the fuck is a GPU? 🙂 A fast chip.") == [
        "Hello there.", "What the is a GPU?", "A fast chip."]  # the emoji-only sentence is dropped, indices close up


def test_the_sentence_the_token_budget_cut_is_not_spoken(tok):
    text = "A GPU is a chip. It runs many small sums at once and"
    budget = len(tok.encode(text, add_special_tokens=False))
    assert spoken(tok, text, budget, eos=False) == ["A GPU is a chip."]
    assert spoken(tok, "It runs many small sums", 3, eos=False)  # unless it is all there is to say


def test_a_reply_stops_at_its_sentence_limit_and_never_repeats_a_sentence(tok):
    step = Scripted(tok, "I am a chatbot. I am a chatbot. I like GPUs. I like tea. I like cats.")
    got = list(stream_reply(step, step.layout, tok, [1, 2, 3], 200, shaping=Shaping(max_sentences=3)))
    assert [(s.index, s.text) for s in got] == [(0, "I am a chatbot."), (1, "I like GPUs."), (2, "I like tea.")]
    assert step.at < len(step.ids)  # generation stopped there, not at the end of the text


def test_the_repetition_penalty_lowers_used_tokens_only():
    from talkserve.runtime.generate import penalise

    logits = np.array([2.0, -1.0, 1.5, 0.5], np.float32)
    out = penalise(logits, [0, 1, 0], 2.0)
    assert out.tolist() == [1.0, -2.0, 1.5, 0.5] and logits[0] == 2.0  # a copy; token 2 now wins
    assert penalise(logits, [0], 1.0) is logits
