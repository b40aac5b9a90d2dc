"""The `tts` model's voice, from its repository files and config parameters: one constructor for the
served model and for the build's capacity calibration, so both measure the same voice."""

from __future__ import annotations

from pathlib import Path

from talkserve.spec import TTSParams


def load_voice(files: Path, params: TTSParams):
    """A Piper VITS voice (`voice.onnx`) or FastSpeech2 + HiFi-GAN ONNX (`acoustic.onnx`, `vocoder.onnx`)."""
    threads = params.intra_op_threads
    if params.kind == "piper":
        from talkserve.models.piper_tts import PiperTTS

        return PiperTTS(files / "voice.onnx", files / "voice.onnx.json", length_scale=params.length_scale,
                        noise_scale=params.noise_scale, noise_w_scale=params.noise_w_scale, threads=threads)
    from talkserve.models.fastspeech2 import FastSpeech2TTS  # imports torch (its model code): only when used

    return FastSpeech2TTS(files / "acoustic.onnx", files / "vocoder.onnx", params.sample_rate, threads)
