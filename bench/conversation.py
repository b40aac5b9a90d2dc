"""Benchmark: time to first token on turn N of a conversation, with the prefix KV cache vs without.

Both sides run in this one process on the same ONNX Runtime decoder (the served `llm_decoder`),
alternating, and must give the same reply token for token. The cache is the one the `llm` model
keeps: on turn N the earlier turns' KV is reused and only the new user text is prefilled.

    python bench/conversation.py [--turns 5] [--repeats 20] [--llm PATH]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from talkserve.export import ort_decoder
from talkserve.runtime.generate import generate_tokens, prompt_ids
from talkserve.runtime.prefix_cache import PrefixCache

QUESTIONS = ["Who are you?", "Tell me more.", "What is pruning?", "Why?", "What is quantization?", "Tell me more.",
             "What is distillation?", "What did I just ask?"]


def first_token_seconds(step, layout, ids, eos, cache) -> tuple[float, list[int]]:
    start = time.perf_counter()
    tokens = generate_tokens(step, layout, ids, 64, eos, cache)
    first = next(tokens, None)
    ttft = time.perf_counter() - start
    return ttft, ([first] if first is not None else []) + list(tokens)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--turns", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--llm", type=Path, default=None, help="Hugging Face model directory (default: the starter)")
    args = ap.parse_args()
    from talkserve.recipe import STARTER_LLM

    step, layout, tok = ort_decoder(args.llm or STARTER_LLM)
    eos = {tok.eos_token_id}
    with_cache, without = [], []
    for _ in range(args.repeats):
        scratch = tempfile.TemporaryDirectory(prefix="talkserve-prefix-cache-")
        cache, history = PrefixCache(scratch.name, 64 << 20), []
        for turn in range(args.turns):
            q = QUESTIONS[turn % len(QUESTIONS)]
            ids = prompt_ids(tok, q, history=history)
            last = turn == args.turns - 1
            t_hit, reply = first_token_seconds(step, layout, ids, eos, cache)
            if last:
                t_miss, reply_miss = first_token_seconds(step, layout, ids, eos, None)
                assert reply == reply_miss, "a cache hit changed the reply"
                with_cache.append(t_hit)
                without.append(t_miss)
            history += [{"role": "user", "content": q},
                        {"role": "assistant", "content": tok.decode(reply, skip_special_tokens=True)}]
        scratch.cleanup()
    n_prompt = len(ids)
    hit, miss = float(np.median(with_cache)), float(np.median(without))
    print(f"turn {args.turns}: prompt {n_prompt} tokens, reply identical with and without the cache")
    print(f"time to first token, median of {args.repeats}: with prefix cache {hit * 1e3:.2f} ms, "
          f"without {miss * 1e3:.2f} ms → {miss / hit:.2f}× sooner")


if __name__ == "__main__":
    main()
