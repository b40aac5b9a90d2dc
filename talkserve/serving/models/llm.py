"""Triton python model `llm` (decoupled): validate the request, then stream one sentence per
response from a greedy KV-cache generation loop over the `llm_decoder` model (BLS).

Each sentence carries what the later steps need from the request (Triton lets a step after a
decoupled model take inputs only from that model's lineage): avatar, emotion, the request clock,
the turn token (barge-in) and the user's text (the voice ensemble returns what it heard)."""

import time

import numpy as np
import triton_python_backend_utils as pb_utils

from talkserve.lipsync.avatars import AvatarStore
from talkserve.paths import avatar_db
from talkserve.runtime.admission import NO_STREAM, Streams
from talkserve.runtime.emotion import parse_emotion, style
from talkserve.runtime.generate import Shaping, prompt_ids, stream_reply
from talkserve.runtime.prefix_cache import PrefixCache
from talkserve.runtime.receipts import Receipts
from talkserve.runtime.spoken import REASONS, clean_for_speech
from talkserve.runtime.tokenizer import ChatTokenizer
from talkserve.runtime.turns import Turns, server_scratch
from talkserve.runtime.unreceipted import stopped_flow
from talkserve.serving.triton import Metrics, ModelArgs, apply_cpu_nice, bls, optional_input, scalar_bytes, stream_each
from talkserve.spec import LLMParams
from talkserve.text import RequestError, decode_history, decode_text
from talkserve.video_codec import parse_codec


class Cancelled(Exception):
    """The client cancelled (or its stream closed): stop generating at the next token."""


class TritonPythonModel:
    def initialize(self, args):
        self.args = ModelArgs(args, LLMParams)
        p = self.args.params
        apply_cpu_nice(p.cpu_nice)
        self.tokenizer = ChatTokenizer(self.args.files / "tokenizer")  # no transformers, so no torch, in this stub
        self.layout = p.kv_layout
        self.default_tokens = p.max_new_tokens
        self.token_limit = p.max_new_tokens_limit
        self.max_chars = p.max_text_chars
        self.max_history = p.max_history_turns
        self.max_prompt = p.max_prompt_tokens
        self.persona = p.persona
        self.shaping = Shaping(p.repetition_penalty, p.max_sentences, self._clean if p.spoken_filter else None)
        # one cache for every instance of this server (a conversation's turns land on any of them)
        self.cache = PrefixCache(server_scratch("prefix-cache"), int(p.prefix_cache_mib * 2**20))
        self.store = AvatarStore(avatar_db(p.avatar_db), read_only=True)
        self.turns, self.receipts = Turns(), Receipts()  # a reply stops when cancelled or its reader left
        self.streams = Streams()
        self.decoder_outputs = self.layout.output_names()
        self._init_metrics()

    def _init_metrics(self):
        m = self.metrics = Metrics(self.args.name)
        self.active = m.gauge("talkserve_llm_generations_active", "Generation loops running now")
        self.tokens = m.counter("talkserve_llm_tokens_total", "Tokens generated")
        self.ttft = m.histogram("talkserve_llm_time_to_first_token_seconds", "Request to first generated token",
                                [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5])
        self.rejected = m.counters_by("talkserve_requests_rejected_total", "Requests refused as invalid, by field",
                                      "field", ["text", "avatar_id", "max_new_tokens", "emotion",
                                                "conversation_id", "history", "receipts", "video_codec"])
        self.cache_lookups = m.counters_by("talkserve_llm_prefix_cache_lookups_total",
                                           "Prefix KV cache lookups, by result", "result", ["hit", "miss"])
        self.cache_tokens = m.counter("talkserve_llm_prefix_cache_reused_tokens_total",
                                      "Prompt tokens whose prefill the prefix cache saved")
        self.filtered = m.counters_by("talkserve_llm_spoken_filter_total",
                                      "What the spoken filter removed from replies before speech, by reason "
                                      "(sentences dropped whole under `dropped`)", "reason", list(REASONS))
        self.cache_bytes = m.gauge("talkserve_llm_prefix_cache_bytes",
                                   "Bytes held by the prefix KV cache (one cache for every llm instance)")

    def _clean(self, sentence: str) -> str | None:
        cleaned = clean_for_speech(sentence)
        for reason, n in cleaned.removed.items():
            self.filtered[reason].increment(n)
        return cleaned.text

    def _system(self, emotion: str) -> str:
        return " ".join(p for p in (self.persona, style(emotion).prompt) if p)

    def _prompt(self, request, text: str, system: str) -> list[int]:
        """The prompt's token ids: system, the request's history (validated), the new text."""
        raw = optional_input(request, "history")
        history = [] if raw is None else decode_history(bytes(raw.reshape(-1)[0]), self.max_history, self.max_chars)
        ids = prompt_ids(self.tokenizer, text, system, history)
        if len(ids) > self.max_prompt:
            raise RequestError("history" if history else "text",
                               f"the prompt is {len(ids)} tokens, the limit is {self.max_prompt}: send fewer turns")
        return ids

    def _validate(self, request) -> tuple[str, str, int, str, str, str, str]:
        text = decode_text(scalar_bytes(request, "text"), "text", self.max_chars)
        avatar_id = decode_text(scalar_bytes(request, "avatar_id"), "avatar_id", 64)
        if not self.store.exists(avatar_id):  # reject before any sentence is streamed
            raise RequestError("avatar_id", f"{avatar_id!r} is not registered")
        tokens = optional_input(request, "max_new_tokens")
        n = self.default_tokens if tokens is None else int(tokens.reshape(-1)[0])
        if not 1 <= n <= self.token_limit:
            raise RequestError("max_new_tokens", f"{n} is outside 1..{self.token_limit}")
        emotion = optional_input(request, "emotion")
        emotion = parse_emotion(None if emotion is None else bytes(emotion.reshape(-1)[0]))
        conversation = optional_input(request, "conversation_id")
        conversation = "" if conversation is None else decode_text(
            bytes(conversation.reshape(-1)[0]), "conversation_id", 128, allow_empty=True)
        receipts = optional_input(request, "receipts")
        receipts = "" if receipts is None else decode_text(bytes(receipts.reshape(-1)[0]), "receipts", 128)
        codec = optional_input(request, "video_codec")
        codec = parse_codec(None if codec is None else bytes(codec.reshape(-1)[0]))
        return text, avatar_id, n, emotion, conversation, receipts, codec

    def _stream(self, request, sender) -> None:
        stream = optional_input(request, "stream")
        stream = NO_STREAM if stream is None else bytes(stream.reshape(-1)[0]).decode()
        self.streams.claim(stream)
        sent, replies = 0, self._replies(request, stream)
        try:
            for response in replies:
                sender.send(response)
                sent += 1
        finally:  # lipsync ends the stream once it has drawn this many sentences
            replies.close()
            self.streams.sent(stream, sent)

    def _replies(self, request, stream: str):
        # Wall clock: lipsync, another process, measures time to first chunk from it. The voice
        # ensemble starts the clock in `asr`, before recognition.
        given = optional_input(request, "started_at")
        start = time.time() if given is None else float(given.reshape(-1)[0])
        try:
            text, avatar_id, max_new_tokens, emotion, conversation, receipts, codec = self._validate(request)
            ids = self._prompt(request, text, self._system(emotion))
        except RequestError as e:
            self.rejected[e.field].increment(1)
            raise
        turn = self.turns.start(conversation)  # supersedes this conversation's previous reply
        carried = [pb_utils.Tensor(name, np.array([value.encode()], dtype=np.object_))
                   for name, value in [("avatar_id", avatar_id), ("emotion", emotion), ("turn", turn),
                                       ("user_text", text), ("stream", stream), ("receipts", receipts),
                                       ("video_codec", codec)]]
        carried.append(pb_utils.Tensor("started_at", np.array([start], np.float64)))

        first = True

        def step(feeds):
            nonlocal first
            stopped = (not self.turns.is_current(turn) or (receipts and self.receipts.left(receipts))
                       or self.receipts.left(stopped_flow(stream)))  # lipsync stopped it at its byte budget
            if request.is_cancelled() or stopped:
                raise Cancelled
            out = bls("llm_decoder", feeds, self.decoder_outputs)
            if first:
                self.ttft.observe(time.time() - start)
                first = False
            self.tokens.increment(1)
            return out

        self.active.increment(1)
        before = (self.cache.hits, self.cache.misses, self.cache.reused_tokens)  # this instance's: one at a time
        try:
            for sentence in stream_reply(step, self.layout, self.tokenizer, ids, max_new_tokens, self.cache,
                                         self.shaping):
                self.streams.touch(stream)
                yield pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("reply_text", np.array([sentence.text.encode()], dtype=np.object_)),
                    pb_utils.Tensor("chunk_index", np.array([sentence.index], np.int32)),
                    *carried,
                ])
        except Cancelled:
            return
        finally:
            self.active.increment(-1)
            c = self.cache
            self.cache_lookups["hit"].increment(c.hits - before[0])
            self.cache_lookups["miss"].increment(c.misses - before[1])
            self.cache_tokens.increment(c.reused_tokens - before[2])
            self.cache_bytes.set(c.bytes)

    def execute(self, requests):
        stream_each(requests, self._stream, self.metrics)
