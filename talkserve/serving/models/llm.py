"""Triton python model `llm` (decoupled): validate the request, then stream one sentence per
response from a greedy KV-cache generation loop over the `llm_decoder` model (BLS)."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils
from transformers import AutoTokenizer

from talkserve.avatars import AvatarStore
from talkserve.generate import stream_sentences
from talkserve.models.llm import KVLayout
from talkserve.serving.triton import ModelArgs, bls, optional_input, scalar_bytes, stream_each
from talkserve.text import RequestError, decode_text


class Cancelled(Exception):
    """The client cancelled (or its stream closed): stop generating at the next token."""


class TritonPythonModel:
    def initialize(self, args):
        self.args = ModelArgs(args)
        p = self.args.params
        self.tokenizer = AutoTokenizer.from_pretrained(self.args.files / "tokenizer")
        self.layout = KVLayout(**json.loads(p["kv_layout"]))
        self.default_tokens = int(p["max_new_tokens"])
        self.token_limit = int(p["max_new_tokens_limit"])
        self.max_chars = int(p["max_text_chars"])
        self.store = AvatarStore(p["avatar_db"])
        self.decoder_outputs = self.layout.output_names()

    def _validate(self, request) -> tuple[str, str, int]:
        text = decode_text(scalar_bytes(request, "text"), "text", self.max_chars)
        avatar_id = decode_text(scalar_bytes(request, "avatar_id"), "avatar_id", 64)
        if not self.store.exists(avatar_id):  # reject before any sentence is streamed
            raise RequestError("avatar_id", f"{avatar_id!r} is not registered")
        tokens = optional_input(request, "max_new_tokens")
        n = self.default_tokens if tokens is None else int(tokens.reshape(-1)[0])
        if not 1 <= n <= self.token_limit:
            raise RequestError("max_new_tokens", f"{n} is outside 1..{self.token_limit}")
        return text, avatar_id, n

    def _stream(self, request, sender) -> None:
        text, avatar_id, max_new_tokens = self._validate(request)
        avatar = pb_utils.Tensor("avatar_id", np.array([avatar_id.encode()], dtype=np.object_))

        def step(feeds):
            if request.is_cancelled():
                raise Cancelled
            return bls("llm_decoder", feeds, self.decoder_outputs)

        try:
            for sentence in stream_sentences(step, self.layout, self.tokenizer, text, max_new_tokens):
                sender.send(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("reply_text", np.array([sentence.text.encode()], dtype=np.object_)),
                    pb_utils.Tensor("chunk_index", np.array([sentence.index], np.int32)),
                    avatar,
                ]))
        except Cancelled:
            return

    def execute(self, requests):
        stream_each(requests, self._stream)
