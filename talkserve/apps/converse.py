"""Microphone-free conversation: a WAV fed in real-time chunks, turns split by silero-vad, replies
streamed from `talking_head_voice`, and barge-in when the user speaks over a reply.

The input side runs on the caller's thread at the pace the audio was spoken; each reply streams
on a thread of its own into reply-N.mp4. When speech starts while a reply is still streaming,
the reply is cancelled on the server (`cancel` → llm, tts and lipsync stop at their next check)
and its mp4 is closed where it was cut.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkserve.client import Chunk, TalkClient, TalkError
from talkserve.client.conversation import Conversation
from talkserve.client.media import Mp4Writer
from talkserve.voice.asr import ASR_SR, VAD_CHUNK, VoiceActivity
from talkserve.voice.audio import resample


@dataclass
class Reply:
    index: int
    path: Path
    utterance_seconds: float
    chunks: list[Chunk] = field(default_factory=list)
    interrupted: bool = False
    error: str | None = None

    def summary(self) -> str:
        heard = self.chunks[0].user_text if self.chunks else None
        state = "interrupted (barge-in)" if self.interrupted else (f"failed: {self.error}" if self.error else "done")
        first = f", first chunk {self.chunks[0].seconds:.2f}s" if self.chunks else ""
        return (f"reply {self.index}: {state}; heard {heard!r} ({self.utterance_seconds:.1f}s of speech); "
                f"{len(self.chunks)} chunks{first} → {self.path}")


class _Streaming(threading.Thread):
    """One reply: stream_voice into an mp4, until it ends or `interrupt()`."""

    def __init__(self, url: str, reply: Reply, audio16k: np.ndarray, conversation: Conversation,
                 emotion: str | None):
        super().__init__(daemon=True)
        self.url, self.reply, self.audio = url, reply, audio16k
        self.conversation, self.emotion = conversation, emotion
        self.stop = threading.Event()

    def run(self) -> None:
        writer = Mp4Writer(self.reply.path)
        try:
            with TalkClient(self.url) as client:
                for chunk in self.conversation.say_voice(self.audio, ASR_SR, client, emotion=self.emotion):
                    if self.stop.is_set():  # the client never shows a reply's frames after its barge-in
                        break
                    writer.add(chunk.video, chunk.audio, chunk.sample_rate)
                    self.reply.chunks.append(chunk)
        except TalkError as e:
            self.reply.error = str(e)
        finally:
            if self.reply.chunks:
                writer.close()
            else:
                writer.abort()

    def interrupt(self, client: TalkClient) -> None:
        self.stop.set()
        self.reply.interrupted = True
        client.cancel(self.conversation.id)


def converse(url: str, audio: np.ndarray, sample_rate: int, avatar: str, out_dir: Path,
             emotion: str | None = None, realtime: bool = True, vad: VoiceActivity | None = None,
             conversation: Conversation | None = None) -> list[Reply]:
    """Each turn's reply streams into out_dir/reply-N.mp4; the turns share one `conversation`
    (its history grows turn by turn; an interrupted reply counts as far as it streamed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pcm = resample(np.asarray(audio, np.float32), sample_rate, ASR_SR)
    vad = vad or VoiceActivity()
    conversation = conversation or Conversation(None, avatar, uuid.uuid4().hex)
    replies: list[Reply] = []
    current: _Streaming | None = None
    threads: list[_Streaming] = []
    speech_start: int | None = None
    began = time.monotonic()

    def chunks():
        for i in range(0, len(pcm) - VAD_CHUNK + 1, VAD_CHUNK):
            if realtime:  # a microphone delivers a chunk only once it has been spoken
                time.sleep(max(0.0, began + (i + VAD_CHUNK) / ASR_SR - time.monotonic()))
            yield pcm[i:i + VAD_CHUNK]

    def reply_to(start: int, end: int) -> None:
        nonlocal current
        reply = Reply(len(replies) + 1, out_dir / f"reply-{len(replies) + 1}.mp4", (end - start) / ASR_SR)
        replies.append(reply)
        if current is not None:  # a barged-in reply ends at its next chunk; its history counts as streamed
            current.join(timeout=30)
        current = _Streaming(url, reply, pcm[start:end], conversation, emotion)
        current.start()
        threads.append(current)

    with TalkClient(url) as control:
        for kind, at in vad.turns(chunks()):
            if kind == "start":
                speech_start = at
                if current is not None and current.is_alive():
                    current.interrupt(control)  # barge-in: the user talks over the reply
            elif speech_start is not None:
                reply_to(speech_start, at)
                speech_start = None
        if speech_start is not None:  # the recording ended mid-turn: that is the end of the turn
            reply_to(speech_start, len(pcm))
        for t in threads:
            t.join()
    return replies
