"""Client-side job behind `talkserve say`: stream a reply into an mp4 and report timings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkserve.client import Chunk, TalkClient
from talkserve.client.conversation import Conversation
from talkserve.client.media import Mp4Writer

STAGES = ("asr", "llm", "llm_decoder", "tts", "lipsync", "wav2lip")


@dataclass
class SpeakResult:
    path: Path
    chunks: list[Chunk]
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def audio_seconds(self) -> float:
        return sum(len(c.audio) / c.sample_rate for c in self.chunks)

    @property
    def total_seconds(self) -> float:
        return self.chunks[-1].seconds

    def summary(self) -> str:
        lines = [f"wrote {self.path}: {len(self.chunks)} chunks, {self.audio_seconds:.2f}s of speech, "
                 f"{sum(len(c.video) for c in self.chunks)} frames"]
        coded = sum(len(c.h264) for c in self.chunks)
        if coded:
            lines.append(f"video as H.264: {coded / 1e6:.2f} MB ({coded * 8 / 1e3 / max(self.audio_seconds, 1e-9):.0f} "
                         f"kbit/s of speech; raw RGB would be {sum(c.video.nbytes for c in self.chunks) / 1e6:.1f} MB)")
        if self.chunks[0].user_text is not None:
            lines.append(f"heard: {self.chunks[0].user_text}")
        lines.append(f"time to first chunk {self.chunks[0].seconds:.2f}s, total {self.total_seconds:.2f}s, "
                     f"real-time factor {self.total_seconds / max(self.audio_seconds, 1e-9):.2f}")
        for c in self.chunks:
            if c.part == 0:
                lines.append(f"  sentence {c.index} first part @ {c.seconds:6.2f}s  {c.text}")
        if self.stage_seconds:
            lines.append("server compute per stage: " + ", ".join(
                f"{k} {v:.2f}s" for k, v in self.stage_seconds.items()))
        return "\n".join(lines)


def compute_seconds(client: TalkClient) -> dict[str, float]:
    """Cumulative server compute time per model, from Triton's statistics extension (empty where a
    deployment restricts statistics to its admin key, as k8s/ does)."""
    from tritonclient.utils import InferenceServerException

    try:
        stats = client.client.get_inference_statistics(as_json=True, headers=client.admin_headers)
        stats = stats.get("model_stats", [])
    except InferenceServerException:
        return {}
    out: dict[str, float] = {}
    for s in stats:
        if s["name"] in STAGES:
            ns = sum(int(s["inference_stats"].get(k, {}).get("ns", 0))
                     for k in ("compute_input", "compute_infer", "compute_output"))
            out[s["name"]] = out.get(s["name"], 0.0) + ns / 1e9
    return out


def speak(url: str, text: str | None, avatar_id: str, output: Path, max_new_tokens: int | None = None,
          emotion: str | None = None, audio: tuple[np.ndarray, int] | None = None,
          conversation: Conversation | None = None, video_codec: str | None = None) -> SpeakResult:
    """Say `text`, or the utterance `audio` = (PCM, sample rate), and write the reply as mp4; within
    `conversation` (its history is sent, and the exchange recorded in it) when given. `video_codec`
    h264: the frames travel as H.264 (decoded here, and encoded into the mp4 as raw frames are)."""
    writer = Mp4Writer(output)
    chunks: list[Chunk] = []
    with TalkClient(url) as client:
        before = compute_seconds(client)
        kw = {"max_new_tokens": max_new_tokens, "emotion": emotion, "video_codec": video_codec}
        if conversation is not None:
            reply = (conversation.say_voice(*audio, client, **kw) if audio is not None
                     else conversation.say(text, client, **kw))
        else:
            reply = (client.stream_voice(*audio, avatar_id, **kw) if audio is not None
                     else client.stream(text, avatar_id, **kw))
        try:
            for chunk in reply:
                writer.add(chunk.video, chunk.audio, chunk.sample_rate)
                chunks.append(chunk)
            if not chunks:
                raise RuntimeError("the server streamed no chunk for this request")
            path = writer.close()
        except BaseException:
            writer.abort()
            raise
        after = compute_seconds(client)
    stages = {k: after[k] - before.get(k, 0.0) for k in STAGES if k in after}
    return SpeakResult(path, chunks, stages)


def concat_audio(chunks: list[Chunk]) -> np.ndarray:
    return np.concatenate([c.audio for c in chunks]) if chunks else np.zeros(0, np.float32)
