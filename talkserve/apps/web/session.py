"""One browser's session at the gateway: its peer connection, its conversation, the reply playing.

Questions arrive on the data channel (typed text, or "talk" start/end around the microphone audio
the browser sends). Each question is a request in this session's conversation, so the server keeps
its turns: a new question supersedes the reply still playing (barge-in), which the gateway also
cuts at once on its side (what is queued for the tracks is dropped). When the browser goes away
the reply is cancelled, so its stream slot on the server is freed like any client's that leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid

import numpy as np

from talkserve.apps.web.playout import RATE, Playout
from talkserve.client import TalkClient, TalkError
from talkserve.client.conversation import Conversation

MAX_TALK_SECONDS = 30.0  # the server's longest utterance (asr.max_audio_seconds)


class Session:
    def __init__(self, url: str, avatar: str, loop: asyncio.AbstractEventLoop):
        self.id = uuid.uuid4().hex[:12]
        self.client = TalkClient(url)
        self.conversation = Conversation(self.client, avatar, conversation_id=f"web-{self.id}")
        self.playout = Playout()
        self.loop = loop
        self.channel = None  # the browser's data channel, once open
        self.reply: threading.Thread | None = None
        self.reply_id = 0
        self.talking = False
        self.mic: list[np.ndarray] = []  # float32 mono at RATE while talking
        self.closed = False
        self.asking = threading.Lock()
        self.tasks: set = set()  # the gateway's asyncio tasks for this session (the microphone reader)

    # ---- to the browser ------------------------------------------------------------------------

    def tell(self, **message) -> None:
        """Send a JSON message on the data channel (from any thread)."""
        def send():
            if self.channel is not None and self.channel.readyState == "open":
                self.channel.send(json.dumps(message))
        self.loop.call_soon_threadsafe(send)

    # ---- from the browser ----------------------------------------------------------------------

    def on_message(self, raw: str) -> None:
        try:
            message = json.loads(raw)
            kind = message["type"]
        except (ValueError, KeyError, TypeError):
            self.tell(type="error", message="messages are JSON objects with a 'type'")
            return
        if kind == "text" and str(message.get("text", "")).strip():
            self.ask(lambda reply_client: self.conversation.say(
                str(message["text"]), reply_client, video_codec="h264", decode_video=False))
        elif kind == "talk" and message.get("state") == "start":
            self.mic, self.talking = [], True
        elif kind == "talk" and message.get("state") == "end" and self.talking:
            self.talking = False
            heard = np.concatenate(self.mic) if self.mic else np.zeros(0, np.float32)
            if len(heard) < RATE // 4:
                self.tell(type="error", message="hold the button while you speak")
                return
            self.ask(lambda reply_client: self.conversation.say_voice(
                heard, RATE, reply_client, video_codec="h264", decode_video=False))

    def on_mic(self, frame) -> None:
        """One audio frame from the browser's microphone (aiortc decodes Opus to s16, 48 kHz)."""
        if not self.talking:
            return
        pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels)).mean(axis=1) / 32768.0
        if sum(map(len, self.mic)) < MAX_TALK_SECONDS * RATE:
            self.mic.append(pcm.astype(np.float32))

    # ---- replies -------------------------------------------------------------------------------

    def ask(self, start) -> None:
        """Cut the reply playing (if any), then stream the new one on a thread of its own (off the
        event loop: stopping a reply waits for the server to end it, and the tracks must not wait)."""
        threading.Thread(target=self._ask, args=(start,), daemon=True).start()

    def _ask(self, start) -> None:
        with self.asking:  # one question at a time: the next waits until this one's reply has started
            self.stop_reply()
            if self.closed:
                return
            self.reply_id += 1
            self.reply = threading.Thread(target=self._stream, args=(start, self.reply_id), daemon=True)
            self.reply.start()

    def stop_reply(self) -> None:
        if self.reply is None or not self.reply.is_alive():
            return
        self.reply_id += 1  # its thread stops forwarding at once
        with contextlib.suppress(TalkError):
            self.client.cancel(self.conversation.id)  # the server stops it (turns): its stream ends
        self.reply.join(timeout=10)
        self.playout.flush()

    def _stream(self, start, reply_id: int) -> None:
        try:
            for chunk in start(self.client):
                if reply_id != self.reply_id or self.closed:
                    break  # superseded: the server stops it by the conversation's turn
                if chunk.user_text is not None and chunk.index == 0 and chunk.part == 0:
                    self.tell(type="heard", reply=reply_id, text=chunk.user_text)
                self.playout.add(chunk.audio, chunk.sample_rate, chunk.h264)
                if chunk.part == 0:
                    self.tell(type="sentence", reply=reply_id, index=chunk.index, text=chunk.text)
            else:
                self.tell(type="done", reply=reply_id)
        except TalkError as e:
            self.tell(type="error", reply=reply_id, message=str(e))

    def close(self) -> None:
        """The browser left: stop its reply (the server frees the stream) and the connection. Blocks:
        call it off the event loop."""
        if self.closed:
            return
        self.closed = True
        with self.asking:
            self.stop_reply()
        self.client.close()
