"""What the served models use at run time, inside Triton's Python stubs: admission and drain, turns
and read receipts, the playback-paced degradation's bookkeeping, the LLM's generation loop with its
shared prefix cache and spoken-text filter, the emotion styles, and ONNX Runtime session options."""
