"""ONNX Runtime session options for a served model on the CPU.

Several sessions share a node's cores across processes (the voice, `wav2lip`, `llm_decoder`, each
in its own stub). ONNX Runtime's intra-op pool spins after its work by default, to pick up the next
run sooner; beside another stage's session that spinning takes the cores the other needs now
(measured on 2 cores: a 6-frame Wav2Lip call beside a bursty session, 540 ms spinning, 345 ms not).
Its arena keeps what its largest run needed; `ArenaRelease` gives that back after a quiet spell.
"""

from __future__ import annotations

import threading

import numpy as np


def session_options(threads: int = 0):
    """`onnxruntime.SessionOptions` with `threads` intra-op threads (0: ONNX Runtime's default) and no spinning."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64", "tensor(int32)": "int32"}


class ArenaRelease:
    """Runs an ONNX Runtime session and gives its CPU arena back once it has been idle `idle_s`.

    The arena keeps the high-water mark of every run (Wav2Lip fp32, 30 frames joined: ~600 MB held
    after the run, measured on this host) until the process ends. ONNX Runtime shrinks an arena only
    at the end of a run asked to (`memory.enable_memory_arena_shrinkage`), and shrinking after every
    run re-faults that memory each call (6–15 frames: 7–9 % slower), so the shrink rides on one run
    of a single row (every free dimension 1) after a quiet spell: no cost under load, memory back
    after it. Runs are serialised with that release; `idle_s` 0 never releases.
    """

    def __init__(self, session, idle_s: float):
        import onnxruntime as ort

        self.session, self.idle_s, self.releases = session, idle_s, 0
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._row = _one_row(session) if idle_s > 0 else {}
        if idle_s > 0:
            self._release_run()  # a model whose one-row run fails says so at load, not at its first quiet spell

    def run(self, outputs: list[str] | None, feeds: dict) -> list:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            try:
                return self.session.run(outputs, feeds)
            finally:
                self._arm()

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        if self.idle_s > 0:
            self._timer = threading.Timer(self.idle_s, self._release)
            self._timer.daemon = True
            self._timer.start()

    def _release(self) -> None:
        with self._lock:
            if self._timer is not threading.current_thread():
                return  # a run came in since: it armed a newer timer
            self._timer = None
            self._release_run()

    def _release_run(self) -> None:
        try:
            self.session.run(None, self._row, self._shrink)
        except Exception as e:
            raise ValueError(f"arena release needs a run with every free dimension 1, which failed: {e}") from e
        self.releases += 1


def _one_row(session) -> dict:
    """Zeros for every input of `session`, each free dimension 1."""
    feeds = {}
    for i in session.get_inputs():
        if i.type not in _DTYPES:
            raise ValueError(f"arena release: input {i.name!r} has type {i.type}, not one of {sorted(_DTYPES)}")
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        feeds[i.name] = np.zeros(shape, dtype=_DTYPES[i.type])
    return feeds
