"""Triton python model `asr`: an utterance's PCM → the recognised text (silero-vad + Whisper).

talking_head_voice's entry: a reply first takes a stream slot (talkserve.runtime.admission, the limit admit
has) or is refused at once, before any recognition. Bad audio (empty, NaN, too long, unsupported
rate, no speech) is INVALID_ARGUMENT naming the field, and gives its slot back; `started_at` starts
the request clock that lipsync's time-to-first-chunk metric reads.
"""

import time

import numpy as np
import triton_python_backend_utils as pb_utils

from talkserve.runtime.drain import refuse_if_draining
from talkserve.serving.triton import Metrics, ModelArgs, StreamGate, optional_input, run_each, string_tensor
from talkserve.spec import AsrParams
from talkserve.text import RequestError
from talkserve.voice.asr import Transcriber, VoiceActivity, check_audio


class TritonPythonModel:
    def initialize(self, args):
        self.args = ModelArgs(args, AsrParams)
        p = self.args.params
        self.asr = None
        if p.preload:
            self._transcriber()
        self.max_seconds = p.max_audio_seconds
        m = self.metrics = Metrics(self.args.name)
        self.rtf = m.histogram("talkserve_asr_real_time_factor", "Recognition seconds per second of input audio",
                               [0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2])
        self.heard = m.counter("talkserve_asr_speech_seconds_total", "Seconds of speech recognised")
        self.rejected = m.counters_by("talkserve_requests_rejected_total", "Requests refused as invalid, by field",
                                      "field", ["audio", "sample_rate"])
        self.gate = StreamGate(p.admission, m)

    def _transcriber(self) -> Transcriber:
        """Whisper + silero-vad (which brings torch: ~400 MB resident), loaded once; by default at the
        first voice request, so a deployment that only takes text never holds them."""
        if self.asr is None:
            p = self.args.params
            vad = VoiceActivity(p.vad_threshold, p.min_silence_ms) if p.vad else None
            self.asr = Transcriber(self.args.files / "whisper", p.language, p.beam_size, p.compute_type, p.threads,
                                   vad)
        return self.asr

    def _run(self, request):
        start = time.time()
        refuse_if_draining()  # the voice ensemble's entry: not worth recognising
        stream = self.gate.admit(request)
        try:
            result, seconds = self._recognise(request)
        except BaseException:
            self.gate.streams.release(stream)  # llm never sees this reply: nothing else would end it
            raise
        self.rtf.observe((time.time() - start) / seconds)
        self.heard.increment(result.speech_seconds)
        return [string_tensor("text", result.text), pb_utils.Tensor("started_at", np.array([start], np.float64)),
                string_tensor("stream", stream)]

    def _recognise(self, request):
        """(the transcription, seconds of audio), or RequestError naming the field."""
        try:
            rate = int(optional_input(request, "sample_rate").reshape(-1)[0])
            audio = check_audio(optional_input(request, "audio"), rate, self.max_seconds)
            result = self._transcriber().transcribe(audio)
            if not result.text:
                raise RequestError("audio", "no speech recognised")
        except RequestError as e:
            self.rejected[e.field].increment(1)
            raise
        return result, audio.size / 16000

    def execute(self, requests):
        return run_each(requests, self._run, self.metrics)
