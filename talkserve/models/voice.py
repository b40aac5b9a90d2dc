"""The `tts` model's voice, from its repository files and config parameters: one constructor for the
served model and for the build's capacity calibration, so both measure the same voice."""

from __future__ import annotations

from pathlib import Path


def load_voice(files: Path, params: dict[str, str]):
    """A Piper VITS voice (`voice.onnx`) or FastSpeech2 + HiFi-GAN ONNX (`acoustic.onnx`, `vocoder.onnx`)."""
    threads = int(params["intra_op_threads"])
    if params.get("kind", "piper") == "piper":
        from talkserve.models.piper_tts import PiperTTS

        return PiperTTS(files / "voice.onnx", files / "voice.onnx.json", length_scale=float(params["length_scale"]),
                        noise_scale=float(params["noise_scale"]), noise_w_scale=float(params["noise_w_scale"]),
                        threads=threads)
    from talkserve.models.fastspeech2 import FastSpeech2TTS  # imports torch (its model code): only when used

    return FastSpeech2TTS(files / "acoustic.onnx", files / "vocoder.onnx", int(params["sample_rate"]), threads)
