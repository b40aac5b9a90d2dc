"""The client library: what a backend imports to talk to a served talking head over gRPC.

`talkserve.client.TalkClient` streams replies (raw or H.264 video), `Conversation` keeps a
conversation's history, `talkserve.client.media` writes a reply as an mp4. Nothing of the server,
the runtime or the build is behind it (import-linter holds that).
"""

from talkserve.client.chunk import Chunk
from talkserve.client.conversation import Conversation
from talkserve.client.talk import (
    MAX_RECEIVE_BYTES,
    MODEL,
    NO_RETRY,
    OUTPUTS,
    RECEIPT,
    VOICE_MODEL,
    VOICE_OUTPUTS,
    RetryPolicy,
    TalkClient,
    TalkError,
    request_inputs,
    stream_error_status,
    voice_inputs,
)

__all__ = ["MAX_RECEIVE_BYTES", "MODEL", "NO_RETRY", "OUTPUTS", "RECEIPT", "VOICE_MODEL", "VOICE_OUTPUTS", "Chunk",
           "Conversation", "RetryPolicy", "TalkClient", "TalkError", "request_inputs", "stream_error_status",
           "voice_inputs"]
