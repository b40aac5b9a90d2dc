"""ONNX Runtime session options for a served model on the CPU.

Several sessions share a node's cores across processes (the voice, `wav2lip`, `llm_decoder`, each
in its own stub). ONNX Runtime's intra-op pool spins after its work by default, to pick up the next
run sooner; beside another stage's session that spinning takes the cores the other needs now
(measured on 2 cores: a 6-frame Wav2Lip call beside a bursty session, 540 ms spinning, 345 ms not).
"""

from __future__ import annotations


def session_options(threads: int = 0):
    """`onnxruntime.SessionOptions` with `threads` intra-op threads (0: ONNX Runtime's default) and no spinning."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts
