"""Conversations: history in the request contract, the prefix KV cache, and the client's memory."""

from __future__ import annotations

import json

import numpy as np
import pytest

from talkserve.client import Chunk
from talkserve.client.conversation import Conversation
from talkserve.export import ort_decoder
from talkserve.runtime.generate import generate_tokens, prompt_ids, stream_sentences
from talkserve.runtime.prefix_cache import PrefixCache
from talkserve.text import RequestError, decode_history

WHO = [{"role": "user", "content": "Who are you?"},
       {"role": "assistant", "content": "I am a talking digital human."}]


@pytest.mark.parametrize(("raw", "message"), [
    (b"not json", "history: not JSON"),
    (b'{"role": "user"}', "history: must be a JSON list of turns, got dict"),
    (b'[{"role": "assistant", "content": "hi"}]', "history: turn 0 has role 'assistant'"),
    (b'[{"role": "user", "content": "hi"}, {"role": "user", "content": "hi"}]', "history: turn 1 has role 'user'"),
    (b'[{"role": "user", "content": "hi"}]', "history: must end with an assistant turn"),
    (b'[{"role": "user", "content": ""}, {"role": "assistant", "content": "x"}]', "history: turn 0 content is empty"),
    (b'[{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]', "history: turn 0 content must be"),
    (b'[{"role": "user", "content": "a", "extra": 1}, {"role": "assistant", "content": "x"}]',
     "history: turn 0 must be an object"),
    (json.dumps(WHO * 20).encode(), "history: has 40 turns, the limit is 32"),
    (b"\xff", "history: not valid UTF-8"),
])
def test_bad_history_names_the_field(raw, message):
    with pytest.raises(RequestError) as e:
        decode_history(raw)
    assert e.value.field == "history" and message in str(e.value)


def test_history_is_parsed_and_normalised():
    assert decode_history(json.dumps(WHO).encode()) == WHO
    assert decode_history(b"[]") == [] and decode_history(b"") == []


@pytest.fixture(scope="module")
def starter():
    """(step, layout, tokenizer) of the starter LLM's decoder under ONNX Runtime."""
    from talkserve.recipe import STARTER_LLM

    return ort_decoder(STARTER_LLM)


def test_history_reaches_the_prompt_through_the_chat_template(starter):
    _, _, tok = starter
    ids = prompt_ids(tok, "Tell me more.", history=WHO)
    assert ids == tok.apply_chat_template([*WHO, {"role": "user", "content": "Tell me more."}],
                                          add_generation_prompt=True, tokenize=True, return_dict=False)
    alone = prompt_ids(tok, "Tell me more.")
    history_ids = tok.apply_chat_template(WHO, tokenize=True, return_dict=False)
    assert ids[: len(history_ids)] == history_ids and len(ids) > len(alone)
    for turn in WHO:  # every earlier turn's tokens are in the prompt
        piece = tok.encode(turn["content"], add_special_tokens=False)
        assert any(ids[i:i + len(piece)] == piece for i in range(len(ids)))


def conversation_prompts(tok, turns: int) -> list[list[int]]:
    history, prompts = [], []
    for i in range(turns):
        question = ["Hello!", "What is pruning?", "Why?", "What is quantization?", "Tell me more."][i % 5]
        prompts.append(prompt_ids(tok, question, history=history))
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": f"Answer {i}."}]
    return prompts


def test_a_cache_hit_and_a_miss_give_the_same_greedy_reply(starter, tmp_path):
    step, layout, tok = starter
    eos = {tok.eos_token_id}
    cache = PrefixCache(tmp_path, 64 << 20)
    history: list[dict[str, str]] = []
    for question in ["Who are you?", "Tell me more.", "Why?", "What is pruning?", "What did I just ask?"]:
        ids = prompt_ids(tok, question, history=history)
        fed: list[dict] = []

        def counting(feeds, fed=fed):
            fed.append(feeds)
            return step(feeds)

        hit = list(generate_tokens(counting, layout, ids, 40, eos, cache))
        miss = list(generate_tokens(step, layout, ids, 40, eos, None))
        assert hit == miss, question
        if history:  # the cached prefix (earlier turns) is not prefilled again
            assert fed[0]["input_ids"].shape[1] < len(ids) // 2, question
        history += [{"role": "user", "content": question},
                    {"role": "assistant", "content": tok.decode(hit, skip_special_tokens=True)}]
    assert cache.hits == 4 and cache.misses == 1 and cache.reused_tokens > 0


def test_follow_ups_hit_with_the_reply_sent_back_as_the_client_records_it(starter, tmp_path):
    """The client sends the streamed sentences joined by spaces, which the chat template
    re-tokenises: the next prompt shares a long prefix with the cached turn, not its whole key."""
    step, layout, tok = starter
    cache, conv = PrefixCache(tmp_path, 64 << 20), Conversation(None, "sample")
    earlier_prompt = 0
    for question in ["What is pruning?", "Tell me more.", "Why?", "Tell me a joke.", "Why?"]:
        hits, reused = cache.hits, cache.reused_tokens
        sentences = [s.text for s in stream_sentences(step, layout, tok, question, 64, history=conv.recent(),
                                                      cache=cache)]
        if conv.history:  # reused: the earlier prompt and some of the reply it generated
            assert cache.hits == hits + 1 and cache.reused_tokens - reused > earlier_prompt, question
        earlier_prompt = len(prompt_ids(tok, question, history=conv.recent()))
        conv.record(question, sentences)
    assert cache.misses == 1


def test_instances_share_one_cache_under_one_byte_bound(starter, tmp_path):
    """Two llm instances (two cache objects on one directory): a turn stored by one is found by the
    other, and their entries together stay under the bound."""
    step, layout, tok = starter
    bound = 2 << 20
    one, two = PrefixCache(tmp_path, bound), PrefixCache(tmp_path, bound)
    rng = np.random.default_rng(0)
    for i in range(25):
        history = []
        for turn in range(2):
            cache = (one, two)[(i + turn) % 2]  # each follow-up on the other instance
            q = ["Hello!", "What is pruning?", "Tell me a joke.", "Why?"][rng.integers(4)]
            ids = prompt_ids(tok, q, history=history)
            hits = cache.hits
            reply = list(generate_tokens(step, layout, ids, 12, {tok.eos_token_id}, cache))
            if turn:
                assert cache.hits == hits + 1
            history += [{"role": "user", "content": q}, {"role": "assistant", "content": tok.decode(reply)}]
            assert one.bytes <= bound and one.bytes == two.bytes
    assert len(one.cached_ids()) >= 2  # it holds what fits, least recently used evicted first


def past_of(n: int, width: int = 4) -> dict[str, np.ndarray]:
    """A fake KV cache of n positions whose values say their position (4 × width bytes each)."""
    return {"past_key_values.0.key": np.arange(n, dtype=np.float32).reshape(1, 1, n, 1).repeat(width, axis=3)}


def test_prefix_cache_reuses_the_longest_common_prefix_cut_to_its_length(tmp_path):
    cache = PrefixCache(tmp_path, max_bytes=1 << 20, min_tokens=2)
    cache.put([1, 2, 3, 4, 5, 6], past_of(6))
    got = cache.lookup([1, 2, 3, 9, 9])
    assert got.tokens == 3 and got.past["past_key_values.0.key"].shape == (1, 1, 3, 4)
    assert got.past["past_key_values.0.key"][0, 0, :, 0].tolist() == [0, 1, 2]  # the first 3 positions
    assert cache.lookup([1, 2, 3, 4, 5, 6]).tokens == 5  # a whole prompt still runs its last token
    assert cache.lookup([1, 9]).tokens == 0 and cache.lookup([7, 1, 2]).tokens == 0  # under min_tokens: a miss
    assert (cache.hits, cache.misses, cache.reused_tokens) == (2, 2, 8)


def test_prefix_cache_drops_entries_it_extends_and_evicts_least_recently_used(tmp_path):
    def put(ids):
        cache.put(ids, past_of(len(ids), width=256))  # 1 KiB a position: each file's few-byte header is noise

    cache = PrefixCache(tmp_path, max_bytes=41 << 10, min_tokens=1)
    put([1, 2])
    put([1, 2, 3, 4])  # extends [1, 2]: that entry is dropped
    assert cache.cached_ids() == [(1, 2, 3, 4)]
    put([7] * 20)
    cache.lookup([1, 2, 3, 9])  # [1, 2, 3, 4] used: now the most recent
    put([8] * 18)  # 42 positions > 41: evicts the least recently used, [7] * 20
    assert sorted(len(k) for k in cache.cached_ids()) == [4, 18] and cache.bytes <= cache.max_bytes
    put([5] * 300)  # larger than the whole cache: not kept, nothing evicted for it
    assert sorted(len(k) for k in cache.cached_ids()) == [4, 18]


def test_a_reader_that_loses_an_entry_to_another_instance_counts_a_miss(tmp_path):
    cache = PrefixCache(tmp_path, 1 << 20, min_tokens=1)
    cache.put([1, 2, 3], past_of(3))
    for data in tmp_path.glob("*.npz"):
        data.unlink()  # evicted by another process between the index scan and the read
    assert cache.lookup([1, 2, 3, 4]).tokens == 0 and cache.misses == 1


class FakeClient:
    """Streams canned chunks; records what each request carried."""

    def __init__(self, sentences: list[str], parts: int = 2):
        self.sentences, self.parts, self.requests = sentences, parts, []

    def stream(self, text, avatar_id, conversation_id=None, history=None, **kw):
        self.requests.append({"text": text, "history": list(history or []), "conversation_id": conversation_id})
        for i, s in enumerate(self.sentences):
            for p in range(self.parts):
                yield Chunk(i, p, s, np.zeros(10, np.float32), 16000, np.zeros((1, 2, 2, 3), np.uint8), 0.1)


def test_the_client_keeps_the_history_and_sends_it():
    client = FakeClient(["First.", "Second."])
    conv = Conversation(client, "sample")
    list(conv.say("Hello!"))
    list(conv.say("Why?"))
    assert client.requests[0]["history"] == []
    assert client.requests[1]["history"] == [{"role": "user", "content": "Hello!"},
                                             {"role": "assistant", "content": "First. Second."}]
    assert {r["conversation_id"] for r in client.requests} == {conv.id}


def test_an_interrupted_reply_is_recorded_as_far_as_it_streamed():
    conv = Conversation(FakeClient(["One.", "Two.", "Three."]), "sample")
    taken = []
    for chunk in conv.say("Tell me a story."):
        if chunk.index == 1 and chunk.part == 1:
            break  # barge-in: the user spoke while sentence two played
        taken.append(chunk)
    assert conv.history[-1] == {"role": "assistant", "content": "One. Two."}  # not "Three.", never streamed
    conv2 = Conversation(FakeClient(["A."]), "sample")
    stream = conv2.say("Hi.")
    next(stream)
    stream.close()  # abandoned at its first chunk, which the caller never came back from
    assert conv2.history == []


def test_max_turns_sends_only_the_most_recent_exchanges():
    client = FakeClient(["Yes."])
    conv = Conversation(client, "sample", max_turns=4)
    for q in ["One?", "Two?", "Three?", "Four?"]:
        list(conv.say(q))
    assert [t["content"] for t in client.requests[-1]["history"]] == ["Two?", "Yes.", "Three?", "Yes."]


def test_a_saved_conversation_loads_back(tmp_path):
    conv = Conversation(None, "sample", "talk-1", WHO)
    conv.save(tmp_path / "talk-1.json")
    back = Conversation.load(None, tmp_path / "talk-1.json", "sample")
    assert back.id == "talk-1" and back.history == WHO
    assert Conversation.load(None, tmp_path / "new.json", "sample").history == []
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not a saved conversation"):
        Conversation.load(None, tmp_path / "bad.json", "sample")


def test_the_starter_answers_a_follow_up_from_the_previous_turn(starter):
    from talkserve.models.corpus import DIALOGUES, FOLLOW_UPS

    step, layout, tok = starter
    replies = {qs[0]: r for qs, r in DIALOGUES}
    for topic in ["What is pruning?", "Tell me a joke.", "What is Triton?"]:
        more = next(m for q, m, _ in FOLLOW_UPS if q == topic)
        history = [{"role": "user", "content": topic}, {"role": "assistant", "content": replies[topic]}]
        got = [s.text for s in stream_sentences(step, layout, tok, "Tell me more.", 96, history=history)]
        assert got[0] == more.split(". ")[0].rstrip(".") + ".", (topic, got)
    asked = [s.text for s in stream_sentences(step, layout, tok, "What did I just ask?", 40,
                                              history=[{"role": "user", "content": "What is pruning?"},
                                                       {"role": "assistant", "content": replies["What is pruning?"]}])]
    assert "pruning" in " ".join(asked).lower(), asked
