"""Triton python model `lipsync` (decoupled): a sentence's audio → portrait frames with a speaking
mouth, streamed in parts, each response carrying exactly the audio its frames show.

kind `wav2lip`: the generator is the `wav2lip` model, called through BLS so the same code drives an
ONNX Runtime session (CPU) or a TensorRT engine (GPU). kind `warp`: the procedural landmark-driven
mouth, computed here (no model, hundreds of frames/s).

Concurrency: every sentence runs on a thread of its own (execute returns at once), so a new
stream's first part does not wait behind another stream's whole sentence; the Wav2Lip calls of all
running sentences are joined into one (`lipsync.batching.Batcher`, up to `batch_frames` frames),
and a stream's sentence i starts only once its sentence i - 1 is sent (`InOrder`): parts leave in
order per stream.

Several instances: any of them may draw any sentence; what one sentence leaves for the next of its
stream lives in the server's scratch, shared by the stub processes — the order (`InOrder`), the
parts sent (`Receipts`), the client's playback clock (the stream's lease). Each instance batches the
sentences it draws; more instances draw paste-back, grading and the warp on more cores (each stub
is one Python process, one GIL).

Degradation: the playback clocks of every running stream are read from the leases. A
Wav2Lip part is no bigger than what the generator's recent pace can draw before any running client
falls under `degrade.margin_s` of audio; when not even that fits, the rest of the sentence is drawn
by the warp instead of freezing. A sentence goes to the warp whole when the generator already draws
as many sentences as its pace keeps in real time (`Seats`), or when it opens a reply that Wav2Lip
could not follow past its first part (the warp then draws a full first part: a cushion at no cost).
"""

import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

from talkserve.lipsync import animate, animate_degrading, animate_warp, frames_within
from talkserve.lipsync.avatars import AvatarError, AvatarStore
from talkserve.lipsync.batching import Batcher, InOrder, Seats
from talkserve.lipsync.warp import WarpRig
from talkserve.paths import avatar_db
from talkserve.playback import DEGRADED_SENTENCES, Playback, affordable_frames, falls_behind_at_start, would_stall
from talkserve.runtime.admission import NO_STREAM, Streams
from talkserve.runtime.emotion import grade_frames, parse_emotion, style
from talkserve.runtime.receipts import ReaderGone, Receipts
from talkserve.runtime.turns import NO_TURN, Turns
from talkserve.runtime.unreceipted import OverBudget, charge, paced, stopped_flow
from talkserve.serving.triton import (
    Metrics,
    ModelArgs,
    bls,
    optional_input,
    released,
    scalar_bytes,
    stream_each_on_threads,
)
from talkserve.spec import LipsyncParams
from talkserve.text import RequestError
from talkserve.video_codec import H264, H264Encoder

NO_BYTES = np.zeros((0,), np.uint8)


def wav2lip(mel: np.ndarray, face: np.ndarray) -> np.ndarray:
    return bls("wav2lip", {"mel": mel, "face": face}, ["frames"])["frames"]


class Stopped(Exception):
    """The request was cancelled, or superseded by a newer turn of its conversation (barge-in)."""


class TritonPythonModel:
    def initialize(self, args):
        self.args = ModelArgs(args, LipsyncParams)
        p = self.args.params
        self.store = AvatarStore(avatar_db(p.avatar_db), read_only=True)
        self.turns = Turns()
        self.streams = Streams(lease_seconds=p.stream_lease_seconds)
        self.fps = p.fps
        self.kind = p.kind
        self.warp = p.warp
        self.rigs: dict[str, tuple[object, WarpRig]] = {}  # avatar id → (the Avatar it was built for, rig)
        self.first_part, self.part, self.max_part_bytes = p.first_part_frames, p.part_frames, p.max_part_mb * 1e6
        self.degrade = p.degrade
        self.generator_fps: float | None = None  # this instance's Wav2Lip frames per second lately (load included)
        self.lock = threading.RLock()  # the pace, shared by the sentences' threads
        self.ipc = threading.RLock()  # one call into the server at a time (triton.stream_each_on_threads)
        # the window lets the other sentences paste and send their part, then join this call
        self.batcher = Batcher(self._generate, max_frames=p.batch_frames, window_s=0.05)
        self.seats = Seats(self.batcher, p.fps)  # sentences drawing with Wav2Lip at once
        self.order = InOrder(timeout_s=self.streams.lease_seconds)
        self.receipts, self.unread, self.unread_timeout = Receipts(), p.unread_parts, p.unread_timeout_s
        self.lead_s, self.unreceipted_bytes = p.unreceipted_lead_s, p.unreceipted_mb * 1e6
        m = self.metrics = Metrics(self.args.name)
        # which instance drew what: the scheduler spreads sentences, InOrder keeps each stream's order
        self.sentences = m.counters_by("talkserve_lipsync_sentences_total", "Sentences drawn, by model instance",
                                       "instance", [args["model_instance_name"]])[args["model_instance_name"]]
        self.degraded = m.counter(DEGRADED_SENTENCES,
                                  "Sentences drawn by the warp mouth because Wav2Lip would have stalled the reply")
        self.frames = m.counter("talkserve_lipsync_frames_total", "Video frames generated")
        self.generator_calls = m.counter("talkserve_lipsync_generator_calls_total",
                                         "Wav2Lip calls (each may join the parts of several streams)")
        self.batch_hist = m.histogram("talkserve_lipsync_generator_call_frames", "Frames per Wav2Lip call",
                                      [6, 12, 25, 50, 100])
        self.fps_hist = m.histogram("talkserve_lipsync_frames_per_second",
                                    "Frames per second of lip-sync compute, per part", [5, 10, 15, 25, 50, 100, 200])
        self.chunks = m.counter("talkserve_chunks_streamed_total", "Responses streamed to clients")
        self.given_up = m.counter("talkserve_lipsync_readers_given_up_total",
                                  "Replies stopped because their reader acknowledged nothing for unread_timeout_s")
        self.over_budget = m.counter("talkserve_lipsync_unreceipted_stopped_total",
                                     "Replies without read receipts stopped at serving.unreceipted_mb of video")
        self.encode_seconds = m.counter("talkserve_lipsync_h264_encode_seconds_total",
                                        "Seconds spent encoding parts to H.264 (requests with video_codec h264)")
        self.encoded_bytes = m.counter("talkserve_lipsync_h264_bytes_total", "H.264 bytes streamed")
        self.ttfc = m.histogram("talkserve_time_to_first_chunk_seconds", "Request to its first streamed chunk",
                                [0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10])

    def _generate(self, mel: np.ndarray, face: np.ndarray) -> np.ndarray:
        with self.ipc:
            self.generator_calls.increment(1)
            self.batch_hist.observe(len(mel))
            return wav2lip(mel, face)  # under ipc: beside the sends, a reply was left unfinished at shutdown

    def _live(self, request, turn: str, flow: str, stream: str = NO_STREAM) -> bool:
        """Not cancelled, not superseded (barge-in), its reader has not said it left, and (no receipts)
        it has not been stopped at its byte budget."""
        with self.ipc:
            cancelled = request.is_cancelled()
        return (not cancelled and self.turns.is_current(turn) and not (flow and self.receipts.left(flow))
                and not (stream != NO_STREAM and self.receipts.left(stopped_flow(stream))))

    def _charge(self, stream: str, part_bytes: int, where: str) -> None:
        """Count a part of a stream without receipts against its budget; past it, stop every stage's
        work on the reply (llm reads the same mark) and end it here (Stopped)."""
        sent = int(self.streams.kept(stream, "unreceipted_bytes") or 0)
        try:
            self.streams.keep(stream, "unreceipted_bytes", str(charge(sent, part_bytes, self.unreceipted_bytes, where)))
        except OverBudget as e:
            self.receipts.leave(stopped_flow(stream))  # llm and every lipsync instance stop the reply
            self.streams.release(stream)  # and its slot is free now (the ensemble forwards nothing more)
            with self.ipc:
                self.over_budget.increment(1)
                pb_utils.Logger.log_warn(f"lipsync: stream {stream[:8]}: {e}")
            raise Stopped from None

    def _room(self, flow: str, live) -> bool:
        """Whether the next part of `flow` may be computed: once its reader has taken all but
        `unread_parts` of those sent; False when the reply stopped or its reader was given up."""
        try:
            with released(self.ipc):
                sent = self.receipts.sent(flow)
                return self.receipts.wait_for_room(flow, sent, self.unread, self.unread_timeout, live)
        except ReaderGone as e:
            self.receipts.leave(flow)  # every instance stops this reply (its later sentences too)
            with self.ipc:
                self.given_up.increment(1)
                pb_utils.Logger.log_warn(f"lipsync: {e}: reply given up")
            return False

    def _rig(self, avatar) -> WarpRig:
        cached = self.rigs.get(avatar.id)
        if cached is None or cached[0] is not avatar:  # the store hands out a new Avatar when it changed
            cached = self.rigs[avatar.id] = (avatar, WarpRig(avatar.portrait, avatar.landmarks, self.warp))
        return cached[1]

    def _clock(self, stream: str) -> Playback:
        """The stream's playback clock as its earlier sentences left it (in whichever instance)."""
        text = self.streams.kept(stream, "clock")
        return Playback.loads(text) if text else Playback()

    def _watched(self, stream: str, clock: Playback) -> list[Playback]:
        """The clocks of this stream and of every other still running (their sentences share the
        generator and the cores with this one)."""
        return [clock, *(self._clock(s) for s in self.streams.running_streams() if s != stream)]

    def _budget(self, stream: str, clock: Playback) -> int | None:
        """Frames Wav2Lip can draw before any watched client falls under the margin (None: no limit known)."""
        fps, margin = self.generator_fps, self.degrade.margin_s
        caps = [affordable_frames(c, fps, margin) for c in self._watched(stream, clock)]
        caps = [c for c in caps if c is not None]
        return min(caps) if caps else None

    def _warp_instead(self, stream: str, clock: Playback, frames: int, seated: bool = True) -> bool:
        """Whether this sentence's rest goes to the warp: Wav2Lip drawing the next `frames` would stall
        this client or another watched one; or, at a reply's first part, could not keep up after it;
        or (not `seated`) the generator already draws all the sentences it keeps in real time."""
        fps, margin = self.generator_fps, self.degrade.margin_s
        starting = clock.first_at is None and falls_behind_at_start(frames, self.fps, fps, margin)
        stalls = any(would_stall(c, frames, fps, margin) for c in self._watched(stream, clock))
        if seated and not starting and not stalls:
            return False
        has = "starts" if clock.first_at is None else f"has {clock.buffered():.2f}s buffered"
        why = (f"Wav2Lip draws {self.seats.limit()} sentence(s) already" if not seated
               else f"Wav2Lip runs {fps:.1f} frames/s")
        with self.ipc:
            self.degraded.increment(1)
            pb_utils.Logger.log_warn(f"lipsync: stream {stream[:8]} {has} and {why}: the warp mouth draws "
                                     "the sentence's rest")
        return True

    def _video(self, frames: np.ndarray, encoder: H264Encoder | None) -> tuple[np.ndarray, np.ndarray]:
        """(video, video_h264) of one part: the frames raw, or encoded (raw then holds none)."""
        if encoder is None:
            return frames, NO_BYTES
        start = time.perf_counter()
        coded = np.frombuffer(encoder.encode(frames), np.uint8)
        with self.ipc:
            self.encode_seconds.increment(time.perf_counter() - start)
            self.encoded_bytes.increment(len(coded))
        return np.zeros((0, *frames.shape[1:]), np.uint8), coded

    def _stream(self, request, sender) -> None:
        stream = scalar_bytes(request, "stream").decode()
        index = int(optional_input(request, "chunk_index")[0])
        turn = scalar_bytes(request, "turn").decode()
        key = stream if stream != NO_STREAM else turn if turn != NO_TURN else ""  # whose order to keep
        flow = scalar_bytes(request, "receipts").decode()
        with released(self.ipc):
            waited = self.order.wait(key, index, lambda: self._live(request, turn, flow))
        self.sentences.increment(1)
        try:
            with self.batcher.drawing():
                self._draw(request, sender, stream)
        finally:  # drawn, stopped, silent or failed: this sentence no longer holds the stream open
            self.order.finished(key, index, waited)
            self.streams.done(stream, index)

    def _draw(self, request, sender, stream: str) -> None:
        text = optional_input(request, "reply_text")
        index = optional_input(request, "chunk_index").astype(np.int32)
        audio = optional_input(request, "audio").astype(np.float32)
        sr = optional_input(request, "sample_rate").astype(np.int32)
        avatar_id = scalar_bytes(request, "avatar_id").decode("utf-8", "replace")
        started_at = float(optional_input(request, "started_at")[0])
        look = style(parse_emotion(scalar_bytes(request, "emotion")))
        turn = scalar_bytes(request, "turn").decode()
        user_text = pb_utils.Tensor("user_text", optional_input(request, "user_text"))
        flow = scalar_bytes(request, "receipts").decode()
        h264 = scalar_bytes(request, "video_codec").decode() == H264  # llm validated it
        try:
            with released(self.ipc):  # no server call in it; neither in the sentence's set-up below
                avatar = self.store.get(avatar_id)
        except AvatarError as e:
            raise RequestError("avatar_id", str(e)) from None
        if audio.size == 0:  # tts spoke nothing: the reply was superseded before it (barge-in)
            return

        def live() -> bool:
            return self._live(request, turn, flow, stream)

        def generate(mel, face):  # checked before each part's compute, so a stop wastes none
            if not live():
                raise Stopped
            return self.batcher(mel, face)

        rate = int(sr[0])
        # parts bounded in bytes (a 1024² portrait's frames are 4× a 512²'s): what an unread part holds
        first, rest = (frames_within(n, avatar.portrait.nbytes, self.max_part_bytes)
                       for n in (self.first_part, self.part))
        clock = self._clock(stream)
        warped = False  # this part drawn by the warp (kind warp, or degraded)
        seated = False  # this sentence holds one of the generator's seats

        def use_warp(frames: int) -> bool:
            nonlocal warped, seated
            warped = self._warp_instead(stream, clock, frames, seated)
            if warped and seated:  # off the generator: the next sentence may take its seat
                self.seats.give()
                seated = False
            return warped

        degrading = self.degrade.enabled and stream != NO_STREAM and self.kind == "wav2lip"
        height, width = avatar.portrait.shape[:2]
        encoder = H264Encoder(width, height, self.fps) if h264 else None  # one per sentence: it opens on an IDR
        try:
            seated = degrading and self.seats.take()
            # the sentence's mel, masks and mouth shapes are computed here: the other sentences send meanwhile
            with released(self.ipc):
                if self.kind == "warp":
                    warped, parts = True, animate_warp(audio, rate, self._rig(avatar), self.fps, first, rest)
                elif degrading and use_warp(first):
                    # the whole sentence on the warp, which draws a full part at once: a cushion, not latency
                    parts = animate_warp(audio, rate, self._rig(avatar), self.fps, rest, rest)
                elif degrading:
                    parts = animate_degrading(audio, rate, avatar, generate, self._rig(avatar), use_warp,
                                              self.fps, first, rest, lambda: self._budget(stream, clock))
                else:
                    parts = animate(audio, rate, avatar, generate, self.fps, first, rest)
            unreceipted = not flow and stream != NO_STREAM
            while True:
                if flow and not self._room(flow, live):
                    return
                if unreceipted and clock.first_at is not None:
                    with released(self.ipc):
                        if not paced(clock.buffered, self.lead_s, live):
                            return
                computed = time.monotonic()  # the pace is the compute's: not the wait for the reader's room
                with released(self.ipc):  # the frames: compute, and the generator call (which takes ipc)
                    part = next(parts, None)
                if part is None:
                    return
                if not live():
                    return
                fps = len(part.frames) / max(time.monotonic() - computed, 1e-6)
                self.fps_hist.observe(fps)
                if not warped:  # a moving average: the pace under the load of the moment
                    with self.lock:
                        g = self.generator_fps
                        self.generator_fps = fps if g is None else 0.7 * g + 0.3 * fps
                self.frames.increment(len(part.frames))
                if index[0] == 0 and part.index == 0:
                    self.ttfc.observe(time.time() - started_at)
                self.streams.touch(stream)
                clock.sent(len(part.audio) / rate)
                if stream != NO_STREAM:
                    self.streams.keep(stream, "clock", clock.dumps())
                with released(self.ipc):
                    video, coded = self._video(grade_frames(part.frames, avatar.box, look), encoder)
                if unreceipted:
                    self._charge(stream, video.nbytes + coded.nbytes, f"sentence {index[0]} part {part.index}")
                response = pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("reply_text", text), pb_utils.Tensor("chunk_index", index),
                    pb_utils.Tensor("part_index", np.array([part.index], np.int32)),
                    pb_utils.Tensor("audio", part.audio), pb_utils.Tensor("sample_rate", sr),
                    pb_utils.Tensor("video", video), pb_utils.Tensor("video_h264", coded), user_text,
                ])
                sender.send(response)
                self.chunks.increment(1)
                if flow:
                    self.receipts.note_sent(flow, self.receipts.sent(flow) + 1)
        except Stopped:
            return
        finally:
            if seated:
                self.seats.give()

    def execute(self, requests):
        stream_each_on_threads(requests, self._stream, self.metrics, self.ipc)
