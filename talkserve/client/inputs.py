"""The request tensors of the ensembles (names and types from talkserve.spec), as tritonclient inputs."""

from __future__ import annotations

import json

import numpy as np
import tritonclient.grpc as grpcclient

__all__ = ["History", "optional_inputs", "request_inputs", "voice_inputs"]


def _bytes_input(name: str, value: str | bytes) -> grpcclient.InferInput:
    data = value.encode("utf-8") if isinstance(value, str) else value
    tensor = grpcclient.InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([data], dtype=np.object_))
    return tensor


def _array_input(name: str, value: np.ndarray, datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(value.shape), datatype)
    tensor.set_data_from_numpy(value)
    return tensor


History = list[dict[str, str]]  # earlier turns: [{"role": "user"|"assistant", "content": ...}, ...]


def optional_inputs(max_new_tokens: int | None = None, emotion: str | None = None,
                    conversation_id: str | None = None, history: History | str | None = None,
                    video_codec: str | None = None) -> list[grpcclient.InferInput]:
    inputs = []
    if max_new_tokens is not None:
        inputs.append(_array_input("max_new_tokens", np.array([max_new_tokens], np.int32), "INT32"))
    if history is not None and not isinstance(history, str | bytes):
        history = json.dumps(history, ensure_ascii=False)
    for name, value in [("emotion", emotion), ("conversation_id", conversation_id), ("history", history),
                        ("video_codec", video_codec)]:
        if value is not None:
            inputs.append(_bytes_input(name, value))
    return inputs


def request_inputs(text: str | bytes, avatar_id: str | bytes, max_new_tokens: int | None = None,
                   emotion: str | None = None, conversation_id: str | None = None, history: History | None = None,
                   video_codec: str | None = None):
    return [_bytes_input("text", text), _bytes_input("avatar_id", avatar_id),
            *optional_inputs(max_new_tokens, emotion, conversation_id, history, video_codec)]


def voice_inputs(audio: np.ndarray, sample_rate: int, avatar_id: str | bytes, max_new_tokens: int | None = None,
                 emotion: str | None = None, conversation_id: str | None = None, history: History | None = None,
                 video_codec: str | None = None):
    """Mono float32 PCM in [-1, 1] at `sample_rate` (the server resamples to 16 kHz)."""
    return [_array_input("user_audio", np.ascontiguousarray(audio, np.float32).reshape(-1), "FP32"),
            _array_input("user_sample_rate", np.array([sample_rate], np.int32), "INT32"),
            _bytes_input("avatar_id", avatar_id),
            *optional_inputs(max_new_tokens, emotion, conversation_id, history, video_codec)]
