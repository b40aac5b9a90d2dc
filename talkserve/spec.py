"""The contract of every served model, written once.

A `ModelSpec` names a model's input and output tensors (shapes from the layout constants here), its
parameters as one pydantic class — stored in `config.pbtxt` as a single JSON parameter and parsed
back by the python model with the same class — whether it streams (decoupled), and who sets its
instance count. From it `talkserve.server.repository` writes `config.pbtxt`, `talkserve.export` draws its
validation inputs, the GPU target its TensorRT profiles, and the client its output names and the
fields it can be told are wrong.

Torch-, OpenCV- and gRPC-free: every python stub and the client import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from talkserve.lipsync.config import WarpConfig
from talkserve.playback import DegradeConfig

__all__ = ["ACK", "ADMIT", "ASR", "CANCEL", "ENSEMBLES", "FACE_SIZE", "LIPSYNC", "LLM", "MEL_BINS", "MEL_STEP",
           "OPTIONAL_INPUTS", "PARAMS", "PARAMS_OF", "REQUEST_FIELDS", "RESPONSE", "SENTENCE", "TALKING_HEAD",
           "TALKING_HEAD_VOICE", "TTS", "WAV2LIP", "AdmitParams", "AsrParams", "KVLayout", "LLMParams",
           "LipsyncParams", "ModelSpec", "NoParams", "OnnxParams", "Params", "TTSParams", "Tensor", "acoustic",
           "llm_decoder", "vocoder"]

# ---- shapes --------------------------------------------------------------------------------

FACE_SIZE = 96  # Wav2Lip's face crop (published checkpoints)
MEL_STEP = 16  # mel frames per video frame window
MEL_BINS = 80  # log-mel bands of Wav2Lip's and HiFi-GAN's inputs


@dataclass(frozen=True)
class KVLayout:
    """Shape facts the serving loop needs about the KV cache, read from the model config."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int

    @classmethod
    def from_config(cls, config) -> KVLayout:
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(config.num_hidden_layers, config.num_key_value_heads, head_dim, config.vocab_size)

    def past_names(self) -> list[str]:
        return [f"past_key_values.{i}.{kind}" for i in range(self.num_layers) for kind in ("key", "value")]

    def present_names(self) -> list[str]:
        return [f"present.{i}.{kind}" for i in range(self.num_layers) for kind in ("key", "value")]

    def input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "position_ids", *self.past_names()]

    def output_names(self) -> list[str]:
        return ["logits", *self.present_names()]

    def kv_dims(self) -> tuple[int, ...]:
        return (-1, self.num_kv_heads, -1, self.head_dim)  # (batch, heads, sequence, head dim)

    def feeds(self, input_ids, past: dict | None = None, start: int = 0) -> dict:
        """One decoder step's inputs: `input_ids` (batch, new) at positions `start`.., with `past`
        (an empty cache when None) — the one place the decoder's feed dict is built."""
        import numpy as np

        batch, new = input_ids.shape
        if past is None:
            past = {n: np.zeros((batch, self.num_kv_heads, 0, self.head_dim), np.float32) for n in self.past_names()}
        return {"input_ids": input_ids, "attention_mask": np.ones((batch, start + new), np.int64),
                "position_ids": np.broadcast_to(np.arange(start, start + new, dtype=np.int64), (batch, new)).copy(),
                **past}


# ---- tensors -------------------------------------------------------------------------------

DType = Literal["BOOL", "INT32", "INT64", "FP32", "FP64", "UINT8", "STRING"]  # Triton's names, less TYPE_


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: DType
    dims: tuple[int, ...] = (1,)  # -1: any size
    optional: bool = False
    doc: str = field(default="", compare=False)  # what a client reads in docs/contract.md


def _strings(*names: str) -> tuple[Tensor, ...]:
    return tuple(Tensor(n, "STRING") for n in names)


# ---- parameters ----------------------------------------------------------------------------

PARAMS = "talkserve_params"  # the one config.pbtxt parameter that holds a model's Params as JSON


class Params(BaseModel):
    """A served model's parameters; the build writes them, the python model parses them with this class."""

    model_config = ConfigDict(extra="forbid")
    stale_hint: ClassVar[str] = "rebuild the repository (`talkserve build`): it was written by another talkserve"

    @classmethod
    def from_config(cls, config: dict):
        """Parse from Triton's model config as the python backend hands it over (JSON)."""
        raw = config.get("parameters", {}).get(PARAMS, {}).get("string_value")
        if raw is None:
            raise ValueError(f"{config.get('name', 'model')}: config.pbtxt has no `{PARAMS}` parameter; "
                             + cls.stale_hint)
        try:
            return cls.model_validate_json(raw)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise ValueError(f"{config.get('name', 'model')}: bad `{PARAMS}` ({problems}); {cls.stale_hint}") from None


class NoParams(Params):
    pass


class OnnxParams(Params):
    onnx_file: str = Field("model.onnx", description="ONNX file in the model's version directory")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads (0 = one per core)")
    cpu_nice: int = Field(0, ge=0, le=19, description="Niceness of this stub (the LLM yields to speech and video)")
    arena_release_s: float = Field(
        0.0, ge=0, description="Idle seconds after which the session gives its memory arena back (a one-row run "
                               "with arena shrinkage; every free input dimension must take 1); 0 = keep it")


class LLMParams(Params):
    kv_layout: KVLayout = Field(description="The decoder's cache shape (from the model config)")
    max_new_tokens: int = Field(description="Reply length when the request does not say")
    max_new_tokens_limit: int = Field(description="Largest max_new_tokens a request may ask")
    max_text_chars: int = Field(description="Longest request text")
    avatar_db: str = Field("", description="Avatar store; empty = $TALKSERVE_HOME/avatars.db of the server")
    cpu_nice: int = Field(0, ge=0, le=19, description="Niceness of this stub")
    max_history_turns: int = Field(description="Conversation turns kept in the prompt")
    max_prompt_tokens: int = Field(description="Prompt budget; the oldest history goes first")
    prefix_cache_mib: float = Field(description="KV prefix cache size")
    persona: str = Field("", description="System message before every conversation (templates with a system role)")
    spoken_filter: bool = Field(True, description="Clean each sentence for speech (runtime.spoken) before tts")
    max_sentences: int = Field(0, ge=0, description="Stop a reply after this many sentences; 0 = no limit")
    repetition_penalty: float = Field(1.0, ge=1.0, description="Penalty on tokens the reply already used")


class TTSParams(Params):
    kind: Literal["piper", "fastspeech2"] = Field(description="The voice's engine")
    fps: float = Field(description="Speech is padded to whole video frames at this rate")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads")
    length_scale: float | None = Field(None, description="Piper: speaking rate (larger = slower)")
    noise_scale: float | None = Field(None, description="Piper: sampling noise of the voice")
    noise_w_scale: float | None = Field(None, description="Piper: sampling noise of the durations")
    sample_rate: int | None = Field(None, description="FastSpeech2: the vocoder's rate")
    acoustic_model: str | None = Field(None, description="GPU target: the acoustic TensorRT model, called by BLS")
    vocoder_model: str | None = Field(None, description="GPU target: the vocoder TensorRT model, called by BLS")


class LipsyncParams(Params):
    kind: Literal["wav2lip", "warp"] = Field(description="wav2lip: the generator model (BLS); warp: procedural")
    fps: float = Field(description="Video frame rate")
    avatar_db: str = Field("", description="Avatar store; empty = $TALKSERVE_HOME/avatars.db of the server")
    warp: WarpConfig = Field(default_factory=WarpConfig, description="The procedural mouth")
    degrade: DegradeConfig = Field(default_factory=DegradeConfig, description="Warp instead of a stall")
    first_part_frames: int = Field(description="Frames of a reply's first part (how soon it starts)")
    part_frames: int = Field(description="Frames of the later parts")
    batch_frames: int = Field(description="Most frames of one generator call (parts of several streams)")
    stream_lease_seconds: float = Field(description="A stream not heard from this long is given up")
    unread_parts: int = Field(2, ge=1, description="Receipts: parts of a flow sent and not yet acknowledged before "
                                                   "the next is computed")
    unread_timeout_s: float = Field(10.0, gt=0, description="Receipts: a flow acknowledging nothing this long is "
                                                            "given up (its reader left or hung)")
    max_part_mb: float = Field(12.0, gt=0, description="Most raw video in one part: its frames are cut to fit the "
                                                       "portrait's size")
    unreceipted_lead_s: float = Field(1.5, gt=0, description="No receipts: a part is computed only while the "
                                                             "player has at most this much buffered")
    unreceipted_mb: float = Field(48.0, ge=0, description="No receipts: video a reply may be sent in all before it "
                                                          "stops with an error naming this limit; 0 = no limit")


class AdmitParams(Params):
    max_streams: int = Field(ge=1, description="Replies running at once; request N+1 is refused")
    stream_lease_seconds: float = Field(description="A stream not heard from this long frees its slot")


class AsrParams(Params):
    language: str | None = Field(description="Spoken language; null = Whisper detects it")
    beam_size: int = Field(description="Whisper beam width")
    compute_type: str = Field(description="CTranslate2 compute type")
    threads: int = Field(description="CPU threads")
    max_audio_seconds: float = Field(description="Longest utterance")
    vad: bool = Field(description="Cut silence with silero-vad first")
    vad_threshold: float = Field(description="silero-vad speech probability")
    min_silence_ms: int = Field(description="Silence that ends a speech segment")
    preload: bool = Field(description="Load Whisper at start, not at the first voice request")
    admission: AdmitParams = Field(description="asr is talking_head_voice's entry: the same stream limit as admit")




# ---- the models ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    params: type[Params] = NoParams
    source: str | None = None  # python model: serving/models/<source>.py; None = ensemble or engine only
    decoupled: bool = False  # streams any number of responses per request
    instances: int | None = None  # fixed here; None = the recipe's

    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def tensor(self, name: str) -> Tensor:
        return next(t for t in (*self.inputs, *self.outputs) if t.name == name)


def llm_decoder(layout: KVLayout) -> ModelSpec:
    kv = layout.kv_dims()
    return ModelSpec(
        "llm_decoder",
        (Tensor("input_ids", "INT64", (-1, -1)), Tensor("attention_mask", "INT64", (-1, -1)),
         Tensor("position_ids", "INT64", (-1, -1)), *(Tensor(n, "FP32", kv) for n in layout.past_names())),
        (Tensor("logits", "FP32", (-1, -1, layout.vocab_size)),
         *(Tensor(n, "FP32", kv) for n in layout.present_names())),
        OnnxParams, "onnx_session")


WAV2LIP = ModelSpec(
    "wav2lip",
    (Tensor("mel", "FP32", (-1, 1, MEL_BINS, MEL_STEP)), Tensor("face", "FP32", (-1, 6, FACE_SIZE, FACE_SIZE))),
    (Tensor("frames", "FP32", (-1, 3, FACE_SIZE, FACE_SIZE)),), OnnxParams, "onnx_session")


def acoustic() -> ModelSpec:
    """FastSpeech2 (GPU target: `tts_acoustic`, a TensorRT model called by tts)."""
    return ModelSpec("tts_acoustic", (Tensor("symbols", "INT64", (1, -1)),),
                     (Tensor("mel", "FP32", (1, MEL_BINS, -1)), Tensor("durations", "FP32", (1, -1))))


def vocoder(num_mels: int = MEL_BINS) -> ModelSpec:
    return ModelSpec("vocoder", (Tensor("mel", "FP32", (1, num_mels, -1)),), (Tensor("audio", "FP32", (1, 1, -1)),))


# Optional request fields of both ensembles, all consumed by llm.
OPTIONAL_INPUTS = (
    Tensor("max_new_tokens", "INT32", optional=True, doc="Reply length in tokens, 1..`llm.max_new_tokens_limit` "
                                                         "(256); default `llm.max_new_tokens`"),
    Tensor("emotion", "STRING", optional=True, doc="`neutral` (default), `happy`, `sad`, `angry`, `surprised`: "
                                                   "steers the prompt, the voice and the portrait"),
    Tensor("conversation_id", "STRING", optional=True,
           doc="≤ 128 characters; a newer request in the same conversation supersedes this one (barge-in), "
               "`cancel` stops it"),
    Tensor("history", "STRING", optional=True,
           doc='JSON list of earlier turns `[{"role": "user", "content": …}, {"role": "assistant", …}]`: '
               "alternating, user first, assistant last; the prompt within `llm.max_prompt_tokens`"),
    # a flow name: the client acknowledges the parts it takes (`ack`), so the server computes ahead
    # of its reader by at most `unread_parts` (talkserve.runtime.receipts)
    Tensor("receipts", "STRING", optional=True,
           doc="≤ 128 characters, a flow name: the client acknowledges the parts it takes with `ack` requests; "
               "the server computes at most `serving.unread_parts` ahead and gives up a flow silent for "
               "`serving.unread_timeout_s`. `TalkClient` does this by default. Without it a reply is computed "
               "at most `serving.unreceipted_lead_s` ahead of its player and ends after `serving.unreceipted_mb` "
               "(48 MB) of video: a whole reply as H.264, 2.4 s of raw 512² frames"),
    # raw (default): `video` holds RGB frames; h264: `video_h264` holds them as Annex-B H.264
    # (talkserve.video_codec), `video` none
    Tensor("video_codec", "STRING", optional=True,
           doc="`raw` (default): `video` holds RGB frames; `h264`: `video_h264` holds them as H.264 (Annex-B, "
               "SPS/PPS in band, each sentence opens on an IDR frame), `video` none"))
# One streamed response of talking_head.
RESPONSE = (Tensor("reply_text", "STRING", doc="The sentence being spoken (UTF-8)"),
            Tensor("chunk_index", "INT32", doc="Sentence index in the reply, from 0"),
            Tensor("part_index", "INT32", doc="Part index within the sentence, from 0"),
            Tensor("audio", "FP32", (-1,), doc="This part's speech, mono in [-1, 1]"),
            Tensor("sample_rate", "INT32", doc="Of `audio` (22050 for the default voice)"),
            Tensor("video", "UINT8", (-1, -1, -1, 3), doc="This part's frames, RGB at 25 fps, exactly as long as "
                                                         "`audio` (none with `video_codec: h264`)"),
            Tensor("video_h264", "UINT8", (-1,), doc="The same frames as H.264 Annex-B bytes (empty with `raw`)"))
USER_TEXT = Tensor("user_text", "STRING", doc="talking_head_voice: what the server heard")
# What llm streams with each sentence (name in llm → name in the ensemble): the sentence, and what
# later steps need from the request (a step downstream of a decoupled one sees only its lineage).
SENTENCE = {"reply_text": "sentence_text", "chunk_index": "sentence_index", "avatar_id": "sentence_avatar_id",
            "started_at": "request_started_at", "emotion": "sentence_emotion", "turn": "sentence_turn",
            "user_text": "sentence_user_text", "stream": "sentence_stream", "receipts": "sentence_receipts",
            "video_codec": "sentence_video_codec"}

LLM = ModelSpec(
    "llm",
    (Tensor("text", "STRING"), Tensor("avatar_id", "STRING"), *OPTIONAL_INPUTS,
     Tensor("started_at", "FP64", optional=True), Tensor("stream", "STRING", optional=True)),
    (Tensor("reply_text", "STRING"), Tensor("chunk_index", "INT32"), Tensor("avatar_id", "STRING"),
     Tensor("started_at", "FP64"), *_strings("emotion", "turn", "user_text", "stream", "receipts", "video_codec")),
    LLMParams, "llm", decoupled=True)
# tts and lipsync see a reply's sentences one request each. One tts instance speaks them in arrival order;
# lipsync instances (the recipe's) keep each stream's order between them (lipsync.batching.InOrder).
TTS = ModelSpec("tts", _strings("reply_text", "emotion", "turn"),
                (Tensor("audio", "FP32", (-1,)), Tensor("sample_rate", "INT32")), TTSParams, "tts", instances=1)
LIPSYNC = ModelSpec(
    "lipsync",
    (Tensor("reply_text", "STRING"), Tensor("chunk_index", "INT32"), Tensor("audio", "FP32", (-1,)),
     Tensor("sample_rate", "INT32"), Tensor("avatar_id", "STRING"), Tensor("started_at", "FP64"),
     *_strings("emotion", "turn", "user_text", "stream", "receipts", "video_codec")),
    (*RESPONSE, USER_TEXT), LipsyncParams, "lipsync", decoupled=True)
# asr admits voice replies (a stream slot, as admit does for text) before it recognises anything.
ASR = ModelSpec("asr", (Tensor("audio", "FP32", (-1,)), Tensor("sample_rate", "INT32"),
                        Tensor("conversation_id", "STRING", optional=True)),
                (Tensor("text", "STRING"), Tensor("started_at", "FP64"), Tensor("stream", "STRING")),
                AsrParams, "asr", instances=1)
# cancel stops a reply named by its conversation (barge-in), or by its flow (a reader that left).
CANCEL = ModelSpec("cancel", (Tensor("conversation_id", "STRING", optional=True),
                              Tensor("receipts", "STRING", optional=True)),
                   (Tensor("cancelled", "BOOL"),), NoParams, "cancel", instances=1)
# ack answers nothing (serving/models/ack.py says why): decoupled, each request closed by its final flag.
ACK = ModelSpec("ack", (Tensor("receipts", "STRING"), Tensor("parts", "INT64")), (Tensor("acknowledged", "BOOL"),),
                NoParams, "ack", decoupled=True, instances=1)
ADMIT = ModelSpec("admit", (Tensor("avatar_id", "STRING"), Tensor("conversation_id", "STRING", optional=True)),
                  (Tensor("stream", "STRING"),), AdmitParams, "admit", instances=2)  # a refusal waits for no one

# The Params class of each python model, by name (llm_decoder's spec depends on the model's layout).
PYTHON_MODELS = (LLM, TTS, LIPSYNC, ASR, CANCEL, ACK, ADMIT, WAV2LIP)  # and llm_decoder
PARAMS_OF = {s.name: s.params for s in PYTHON_MODELS} | {"llm_decoder": OnnxParams}

# The ensembles: what a client sends and receives. An ensemble's tensors share one namespace, so the
# utterance cannot be called `audio` like the reply's audio in each response.
AVATAR_ID = Tensor("avatar_id", "STRING", doc="A registered avatar (`talkserve avatar add`)")
TALKING_HEAD = ModelSpec("talking_head", (Tensor("text", "STRING", doc="The question, UTF-8, 1..1000 characters"),
                                          AVATAR_ID, *OPTIONAL_INPUTS), RESPONSE, decoupled=True)
TALKING_HEAD_VOICE = ModelSpec(
    "talking_head_voice",
    (Tensor("user_audio", "FP32", (-1,), doc="The spoken question, mono in [-1, 1], ≤ `asr.max_audio_seconds`"),
     Tensor("user_sample_rate", "INT32", doc="Of `user_audio` (any rate; resampled to 16 kHz)"), AVATAR_ID,
     *OPTIONAL_INPUTS),
    (*RESPONSE, USER_TEXT), decoupled=True)
ENSEMBLES = (TALKING_HEAD, TALKING_HEAD_VOICE)

# Request fields a model can reject by name ("<field>: <problem>", talkserve.text.RequestError).
REQUEST_FIELDS = tuple(dict.fromkeys(
    [*TALKING_HEAD.input_names(), "reply_text", "audio", "sample_rate"]))
