"""`talkserve web`: a WebRTC gateway that shows the digital human in a browser.

It is a gRPC client of Triton like any other (never part of the server): one page, and per browser
one peer connection (aiortc: WebRTC in Python on the asyncio loop, with H.264 passthrough of encoded
packets, which browser gateways such as LiveTalking and OpenAvatarChat use too). Replies are
requested with `video_codec: h264` and their parts forwarded without re-encoding where the browser
took H.264 (web/playout.py); the microphone's audio comes back on the same connection for spoken
questions (hold to talk), and a new question cuts the reply playing (barge-in, web/session.py).

    talkserve web --url 127.0.0.1:8001 [--host 127.0.0.1] [--port 8080] [--avatar sample]
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from aiohttp import web
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from talkserve.apps.web.playout import ReplyAudio, ReplyVideo
from talkserve.apps.web.session import Session

PAGE = Path(__file__).with_name("page.html")
SILENT_BROWSER_S = 5.0  # the page sends a ping every second: this long without one, it is gone


def _prefer_h264(pc: RTCPeerConnection) -> None:
    """H.264 first in the video answer (the parts go through as encoded), the rest as a fallback."""
    codecs = RTCRtpSender.getCapabilities("video").codecs
    order = [c for c in codecs if c.mimeType == "video/H264"] + [c for c in codecs if c.mimeType != "video/H264"]
    for t in pc.getTransceivers():
        if t.kind == "video":
            t.setCodecPreferences(order)


def negotiated_h264(sdp: str) -> bool:
    """Whether the video section of an SDP answer sends H.264 (its first payload type)."""
    video = sdp.split("m=video", 1)[1].split("\nm=", 1)[0] if "m=video" in sdp else ""
    first = video.split("\n", 1)[0].split()[2:3]  # " <port> <proto> <first payload type> ..."
    return bool(first) and f"a=rtpmap:{first[0]} H264/" in video


class Gateway:
    def __init__(self, url: str, avatar: str):
        self.url, self.avatar = url, avatar
        self.sessions: dict[str, tuple[Session, RTCPeerConnection]] = {}
        self.heard_from: dict[str, float] = {}

    async def page(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(PAGE)

    async def offer(self, request: web.Request) -> web.Response:
        try:
            params = await request.json()
            offer = RTCSessionDescription(sdp=params["sdp"], type=params["type"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "POST the browser's offer as {sdp, type}"}, status=400)
        loop = asyncio.get_running_loop()
        session, pc = Session(self.url, self.avatar, loop), RTCPeerConnection()
        self.sessions[session.id], self.heard_from[session.id] = (session, pc), time.monotonic()

        @pc.on("datachannel")
        def on_channel(channel):
            session.channel = channel

            @channel.on("message")
            def on_message(message):
                self.heard_from[session.id] = time.monotonic()
                if message != '{"type":"ping"}':
                    session.on_message(message)

        @pc.on("track")
        def on_track(track):
            if track.kind == "audio":  # kept on the session: a task only the loop references may be collected
                session.tasks.add(asyncio.ensure_future(self._microphone(session, track)))

        @pc.on("connectionstatechange")
        async def on_state():
            if pc.connectionState in ("failed", "closed"):
                await self.close(session.id)

        video = ReplyVideo(session.playout)
        pc.addTrack(ReplyAudio(session.playout))
        pc.addTrack(video)
        _prefer_h264(pc)  # before the offer: its media sections take these transceivers and their codecs
        await pc.setRemoteDescription(offer)
        answer = await pc.createAnswer()
        video.set_passthrough(negotiated_h264(answer.sdp))
        await pc.setLocalDescription(answer)
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type,
                                  "session": session.id, "h264_passthrough": video.passthrough})

    async def _microphone(self, session: Session, track) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                session.on_mic(await track.recv())

    async def close(self, session_id: str) -> None:
        entry = self.sessions.pop(session_id, None)
        self.heard_from.pop(session_id, None)
        if entry is None:
            return
        session, pc = entry
        await asyncio.get_running_loop().run_in_executor(None, session.close)
        await pc.close()

    async def watch(self, app: web.Application):
        """Close the sessions of browsers that went quiet (closed, crashed, network gone): the
        reply they were watching is cancelled and its stream slot freed at once, not after ICE's
        30 s consent timeout."""
        async def loop():
            while True:
                await asyncio.sleep(1.0)
                now = time.monotonic()
                for sid in [s for s, t in self.heard_from.items() if now - t > SILENT_BROWSER_S]:
                    await self.close(sid)

        task = asyncio.ensure_future(loop())
        yield
        task.cancel()
        for sid in list(self.sessions):
            await self.close(sid)


def make_app(url: str, avatar: str) -> web.Application:
    gateway = Gateway(url, avatar)
    app = web.Application()
    app.router.add_get("/", gateway.page)
    app.router.add_post("/offer", gateway.offer)
    app.cleanup_ctx.append(gateway.watch)
    return app


def serve(url: str, avatar: str, host: str = "127.0.0.1", port: int = 8080) -> None:
    web.run_app(make_app(url, avatar), host=host, port=port, print=None)
