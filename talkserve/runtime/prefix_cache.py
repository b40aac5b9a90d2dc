"""Prefix KV cache for the `llm` loops, shared by every `llm` instance of one server.

An entry is the decoder's KV cache after a token sequence (a turn's prompt and the reply it
generated). A new prompt reuses the entry with the **longest common token prefix**, cut to that
length: under causal attention the KV at position t depends on tokens 0..t alone, so the first L
positions of any entry are exactly the cache of its first L tokens. Matching on the common prefix
rather than on whole keys is what makes a conversation's next turn hit: the client sends the reply
back as text, and the chat template re-tokenises it (sentence joins, an end-of-turn token), so the
next prompt rarely starts with the stored ids whole (measured on the starter: 0 of 6 follow-ups
hit with whole-key matching on one instance, `bench/prefix_cache_service.py`).

The entries live as files in a directory every instance of the server sees (its scratch in
/dev/shm, like the barge-in turns): Triton spreads a conversation's turns over the `llm`
instances, separate processes, and a per-process cache missed whenever the next turn landed on
another one. One byte bound holds for all of them; the least recently used entries go first.
Writes are atomic renames; eviction runs under a file lock; a reader that loses an entry to a
concurrent eviction counts a miss and prefills in full, which gives the same greedy reply.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Past = dict[str, np.ndarray]  # past_key_values.{i}.{key,value}: (1, kv_heads, S, head_dim)
IDS, DATA = ".ids", ".npz"  # an entry's key (int32 token ids) and its KV arrays


@dataclass
class Lookup:
    tokens: int  # how many leading prompt tokens the cache covers (0 = miss)
    past: Past | None


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the longest common prefix of two id arrays."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


class PrefixCache:
    """The cache in `root`, bounded by `max_bytes` over every process that uses that directory.

    `min_tokens`: a shorter common prefix counts as a miss (a shared beginning-of-text token is no
    reuse worth a file read). hits/misses/reused_tokens count this process's lookups.
    """

    def __init__(self, root: str | Path, max_bytes: int, min_tokens: int = 4):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.min_tokens = max_bytes, min_tokens
        self.hits = self.misses = self.reused_tokens = 0

    @staticmethod
    def size(past: Past) -> int:
        return sum(a.nbytes for a in past.values())

    @property
    def bytes(self) -> int:
        """Bytes of KV held now, by every process together."""
        return sum(_size(p) for p in self.root.glob(f"*{DATA}"))

    def cached_ids(self) -> list[tuple[int, ...]]:
        return [tuple(ids.tolist()) for _, ids in self._index()]

    def _index(self) -> list[tuple[Path, np.ndarray]]:
        entries = []
        for path in self.root.glob(f"*{IDS}"):
            with contextlib.suppress(FileNotFoundError):  # evicted by another process meanwhile
                entries.append((path.with_suffix(DATA), np.frombuffer(path.read_bytes(), np.int32)))
        return entries

    def lookup(self, ids: list[int]) -> Lookup:
        """The longest cached prefix of `ids` that leaves at least one token to run (the last
        prompt token's logits choose the first reply token), with its KV cut to that length."""
        want = np.asarray(ids, np.int32)
        best, best_n = None, 0
        for data, key in self._index():
            n = min(common_prefix(key, want), len(want) - 1)
            if n > best_n:
                best, best_n = data, n
        past = self._load(best, best_n) if best is not None and best_n >= self.min_tokens else None
        if past is None:
            self.misses += 1
            return Lookup(0, None)
        self.hits += 1
        self.reused_tokens += best_n
        return Lookup(best_n, past)

    def _load(self, data: Path, n: int) -> Past | None:
        try:
            with np.load(data) as z:
                past = {name: np.ascontiguousarray(z[name][:, :, :n]) for name in z.files}
            _touch(data)  # most recently used
        except (FileNotFoundError, ValueError, OSError):  # evicted (or half-gone) under us: a miss
            return None
        return past

    def put(self, ids: list[int], past: Past) -> None:
        """Keep `past` (the cache after exactly `ids`); entries it extends are dropped (any prompt
        shares at least as long a prefix with it), then the least recently used, to fit the bound."""
        size = self.size(past)
        if not ids or size > self.max_bytes:
            return
        key = np.asarray(ids, np.int32)
        name = hashlib.sha1(key.tobytes()).hexdigest()
        data = self.root / f"{name}{DATA}"
        _write_atomic(data, lambda f: np.savez(f, **past))
        _touch(data)
        _write_atomic(data.with_suffix(IDS), lambda f: f.write(key.tobytes()))  # indexed once its data is there
        with self._locked():
            for other, other_key in self._index():
                if other != data and len(other_key) < len(key) and common_prefix(other_key, key) == len(other_key):
                    _remove(other)
            self._evict()

    def _evict(self) -> None:
        held = []
        for path in self.root.glob(f"*{DATA}"):
            with contextlib.suppress(FileNotFoundError):
                st = path.stat()
                held.append((st.st_mtime_ns, st.st_size, path))
        total = sum(s for _, s, _ in held)
        for _, s, path in sorted(held):
            if total <= self.max_bytes:
                break
            _remove(path)
            total -= s

    @contextlib.contextmanager
    def _locked(self):
        with open(self.root / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _touch(path: Path) -> None:
    """Set the use time to now, to the nanosecond: a file system stamps writes with a coarse clock
    (a few ms), which would tie entries written in quick succession."""
    now = time.time_ns()
    os.utime(path, ns=(now, now))


def _remove(data: Path) -> None:
    data.with_suffix(IDS).unlink(missing_ok=True)  # out of the index first, then the data
    data.unlink(missing_ok=True)


def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
