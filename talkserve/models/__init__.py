"""The pipeline's networks in their published layouts (torch), and the torch-free voices the stubs run."""

from __future__ import annotations

import importlib

# The public API, each name from the module that defines it; loaded on first use, so importing
# one light submodule (a config) does not bring torch with the package.
_API = {
    "DecoderStep": "talkserve.models.llm",
    "load_llm": "talkserve.models.llm",
    "check_model_dir": "talkserve.models.llm",
    "Wav2Lip": "talkserve.models.wav2lip",
    "load_wav2lip": "talkserve.models.wav2lip",
    "Generator": "talkserve.models.hifigan",
    "load_hifigan": "talkserve.models.hifigan",
    "FastSpeech2": "talkserve.models.fastspeech2",
    "FastSpeech2TTS": "talkserve.models.fastspeech2",
    "load_fastspeech2": "talkserve.models.fastspeech2",
    "PiperTTS": "talkserve.models.piper_tts",
    "load_voice": "talkserve.models.voice",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
