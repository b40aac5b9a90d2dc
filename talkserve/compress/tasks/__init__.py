"""What each model brings to compression: its examples, runners, loss, metrics and export — one
protocol (`Task`, in `base`) that every model implements, the ONNX-only Piper voice included."""

from talkserve.compress.tasks.acoustic import AcousticTask
from talkserve.compress.tasks.base import Task
from talkserve.compress.tasks.llm import LLMTask
from talkserve.compress.tasks.piper import PiperTask, transcribe
from talkserve.compress.tasks.vocoder import VocoderTask
from talkserve.compress.tasks.wav2lip import Wav2LipTask

__all__ = ["AcousticTask", "LLMTask", "PiperTask", "Task", "VocoderTask", "Wav2LipTask", "transcribe"]
