"""The pipeline's networks in their published layouts (torch), and the torch-free voices the stubs run."""

from __future__ import annotations

from talkserve.lazy import lazy_api

# The public API, each name from the module that defines it; loaded on first use, so importing
# one light submodule (a config) does not bring torch with the package.
_API = {
    "DecoderStep": "llm",
    "load_llm": "llm",
    "check_model_dir": "llm",
    "Wav2Lip": "wav2lip",
    "load_wav2lip": "wav2lip",
    "Generator": "hifigan",
    "load_hifigan": "hifigan",
    "FastSpeech2": "fastspeech2",
    "FastSpeech2TTS": "fastspeech2",
    "load_fastspeech2": "fastspeech2",
    "PiperTTS": "piper_tts",
    "load_voice": "voice",
}
__all__, __getattr__ = lazy_api(__name__, _API)
