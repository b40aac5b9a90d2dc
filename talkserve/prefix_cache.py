"""Prefix KV cache for the `llm` loop: the decoder's cache after a prompt prefix (system +
history), kept by the prefix's token ids, bounded in bytes with least-recently-used eviction.

A new turn whose prompt starts with a cached prefix prefills only the tokens after it. A miss
(another replica, an eviction) costs a full prefill and gives the same greedy reply. Pure NumPy,
no Triton: the `llm` python model owns one per instance, the tests drive it directly.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

Past = dict[str, np.ndarray]  # past_key_values.{i}.{key,value}: (1, kv_heads, S, head_dim)


@dataclass
class Lookup:
    tokens: int  # how many leading prompt tokens the cache covers (0 = miss)
    past: Past | None


class PrefixCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple[int, ...], Past] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = self.reused_tokens = 0

    @staticmethod
    def size(past: Past) -> int:
        return sum(a.nbytes for a in past.values())

    def lookup(self, ids: list[int]) -> Lookup:
        """The longest cached prefix of `ids` that leaves at least one token to run (the last
        prompt token's logits choose the first reply token)."""
        best: tuple[int, ...] | None = None
        for key in self.entries:
            n = len(key)
            if n < len(ids) and (best is None or n > len(best)) and tuple(ids[:n]) == key:
                best = key
        if best is None:
            self.misses += 1
            return Lookup(0, None)
        self.entries.move_to_end(best)
        self.hits += 1
        self.reused_tokens += len(best)
        return Lookup(len(best), self.entries[best])

    def put(self, ids: list[int], past: Past) -> None:
        """Keep `past` (the cache after exactly `ids`); evict the least recently used to fit."""
        key = tuple(ids)
        size = self.size(past)
        if not key or size > self.max_bytes:
            return
        if key in self.entries:
            self.bytes -= self.size(self.entries.pop(key))
        while self.entries and self.bytes + size > self.max_bytes:
            self.bytes -= self.size(self.entries.popitem(last=False)[1])
        # own copies: served arrays can be views into the python backend's shared memory
        self.entries[key] = {name: np.array(a, copy=True) for name, a in past.items()}
        self.bytes += size
