"""CPU target: ONNX (validated vs PyTorch) run by ONNX Runtime inside python models."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from talkserve import repository as repo
from talkserve.export import export_llm_decoder, export_wav2lip
from talkserve.models.llm import KVLayout, load_llm
from talkserve.models.wav2lip import load_wav2lip
from talkserve.recipe import Recipe
from talkserve.repository import T, out, python_model, tensor
from talkserve.tokenizer import check_same_as_transformers

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "tokenizer.model", "vocab.json", "merges.txt", "generation_config.json", "config.json")


# tts and lipsync see a reply's sentences one request each; one instance keeps them in order
# (Triton queues a model's requests FIFO), so the parts of a reply stream out in order.
SEQUENTIAL = 1


def check_inputs(root: Path, recipe: Recipe, extra: dict) -> None:
    """Fail in a second on a missing input, not after minutes of export."""
    from talkserve.models.llm import check_model_dir

    check_model_dir(recipe.llm.resolved_path())
    t = recipe.tts
    tts_files = t.resolved_paths() if t.kind == "piper" else (t.acoustic, t.vocoder)
    for path in [*tts_files, recipe.wav2lip.checkpoint]:
        if path is not None and not Path(path).is_file():
            raise ValueError(f"{path} does not exist")
    if recipe.compress.data_dir is not None and not recipe.compress.data_dir.is_dir():
        raise ValueError(f"compress.data_dir {recipe.compress.data_dir} is not a directory")


def _data(recipe: Recipe, extra: dict):
    """One calibration/distillation data source per build, shared by every model."""
    from talkserve.compress.data import DataSource

    if "_data" not in extra:
        extra["_data"] = DataSource(recipe.compress.data_dir, recipe.compress.held_out, recipe.compress.max_examples)
    return extra["_data"]


def _compress(task, cfg, recipe: Recipe, extra: dict, version_dir: Path, served_name: str):
    """Run the model's compression schedule; install the served ONNX (and the TensorRT Q/DQ form)."""
    from talkserve.compress.pipeline import compress_model, compress_piper

    c = recipe.compress
    with tempfile.TemporaryDirectory(prefix=f"talkserve-{task.name}-") as work:
        work = Path(work)
        if task.name == "piper":
            student, report = None, compress_piper(task, cfg, work, c.accept_failed_gates, c.latency_runs)
        else:
            student, report = compress_model(task, cfg, work, c.accept_failed_gates, c.latency_runs)
        version_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / report.served, version_dir / served_name)
        if report.trt:
            stem = served_name.removesuffix(".onnx")
            shutil.copyfile(work / report.trt, version_dir / f"{stem}.qdq_s8.onnx")
    extra.setdefault("_compression", []).append(report)
    return student


def llm_step(root: Path, recipe: Recipe, extra: dict) -> None:
    src = recipe.llm.resolved_path()
    model, tokenizer = load_llm(src)
    if recipe.compress.llm.active:
        from talkserve.compress.tasks import LLMTask

        task = LLMTask(model, tokenizer, _data(recipe, extra))
        model = _compress(task, recipe.compress.llm, recipe, extra, root / "llm_decoder" / "1", "model.onnx")
        model.save_pretrained(root / "llm" / "1" / "compressed_model")  # loads as a normal HF model
    else:
        report = export_llm_decoder(model, root / "llm_decoder" / "1" / "model.onnx")
        extra["reports"]["llm_decoder"] = {"max_abs_diff": report.max_abs_diff}
    layout = KVLayout.from_config(model.config)

    kv_in = [tensor(n, T.TYPE_FP32, [-1, layout.num_kv_heads, -1, layout.head_dim])
             for n in layout.past_names()]
    kv_out = [out(n, T.TYPE_FP32, [-1, layout.num_kv_heads, -1, layout.head_dim])
              for n in layout.present_names()]
    decoder = python_model(
        "llm_decoder",
        [tensor("input_ids", T.TYPE_INT64, [-1, -1]), tensor("attention_mask", T.TYPE_INT64, [-1, -1]),
         tensor("position_ids", T.TYPE_INT64, [-1, -1]), *kv_in],
        [out("logits", T.TYPE_FP32, [-1, -1, layout.vocab_size]), *kv_out],
        {"onnx_file": "model.onnx", "intra_op_threads": recipe.serving.onnx_threads, "cpu_nice": recipe.llm.cpu_nice},
        instances=recipe.llm.instances,
    )
    repo.write_config(root / "llm_decoder", decoder)
    repo.install_python_model(root / "llm_decoder", "onnx_session")

    llm = python_model(
        "llm",
        [tensor("text", T.TYPE_STRING, [1]), tensor("avatar_id", T.TYPE_STRING, [1]),
         *(tensor(n, dtype, [1], optional=True) for n, dtype in repo.OPTIONAL_INPUTS),
         tensor("started_at", T.TYPE_FP64, [1], optional=True), tensor("stream", T.TYPE_STRING, [1], optional=True)],
        [out("reply_text", T.TYPE_STRING, [1]), out("chunk_index", T.TYPE_INT32, [1]),
         out("avatar_id", T.TYPE_STRING, [1]), out("started_at", T.TYPE_FP64, [1]),
         out("emotion", T.TYPE_STRING, [1]), out("turn", T.TYPE_STRING, [1]), out("user_text", T.TYPE_STRING, [1]),
         out("stream", T.TYPE_STRING, [1])],
        {"kv_layout": json.dumps(asdict(layout)), "max_new_tokens": recipe.llm.max_new_tokens,
         "max_new_tokens_limit": recipe.llm.max_new_tokens_limit,
         "max_text_chars": recipe.serving.max_text_chars, "avatar_db": recipe.serving.configured_avatar_db(),
         "cpu_nice": recipe.llm.cpu_nice, "max_history_turns": recipe.llm.max_history_turns,
         "max_prompt_tokens": recipe.llm.max_prompt_tokens, "prefix_cache_mib": recipe.llm.prefix_cache_mib},
        instances=recipe.llm.instances, decoupled=True,
    )
    repo.write_config(root / "llm", llm)
    repo.install_python_model(root / "llm", "llm")
    tok_dir = root / "llm" / "1" / "tokenizer"
    tok_dir.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, tok_dir / name)
    check_same_as_transformers(tok_dir)  # the stub tokenises without transformers: same ids or no build


def _piper_files(root: Path, recipe: Recipe, extra: dict) -> dict:
    from talkserve.models.piper_tts import PiperTTS

    model, config = recipe.tts.resolved_paths()
    PiperTTS(model, config)  # fail the build, not the server, on a bad voice
    files = root / "tts" / "1"
    files.mkdir(parents=True)
    if recipe.compress.piper.active:
        from talkserve.compress.tasks import PiperTask

        _compress(PiperTask(model, config, _data(recipe, extra)), recipe.compress.piper, recipe, extra, files,
                  "voice.onnx")
    else:
        shutil.copyfile(model, files / "voice.onnx")
    shutil.copyfile(config, files / "voice.onnx.json")
    t = recipe.tts
    return {"length_scale": t.length_scale, "noise_scale": t.noise_scale, "noise_w_scale": t.noise_w_scale}


def _fastspeech2_files(root: Path, recipe: Recipe, extra: dict) -> dict:
    from talkserve.compress.tasks import AcousticTask, VocoderTask, acoustic_spec, vocoder_spec
    from talkserve.export import export
    from talkserve.models.fastspeech2 import load_fastspeech2
    from talkserve.models.hifigan import CONFIGS, load_hifigan

    t, c, files = recipe.tts, recipe.compress, root / "tts" / "1"
    acoustic = load_fastspeech2(t.acoustic, t.acoustic_seed)
    h = CONFIGS[t.vocoder_config]
    vocoder = load_hifigan(t.vocoder, h, t.vocoder_seed)
    if t.vocoder is None and t.vocoder_fit_steps:
        from talkserve.models.train_vocoder import FitConfig, fit_to_speech

        fit_to_speech(vocoder, _data(recipe, extra).speech.train, FitConfig(steps=t.vocoder_fit_steps))
    if c.acoustic.active:
        _compress(AcousticTask(acoustic, _data(recipe, extra)), c.acoustic, recipe, extra, files, "acoustic.onnx")
    else:
        export(acoustic, acoustic_spec(), files / "acoustic.onnx")
    if c.vocoder.active:
        _compress(VocoderTask(vocoder, _data(recipe, extra)), c.vocoder, recipe, extra, files, "vocoder.onnx")
    else:
        export(vocoder, vocoder_spec(h.num_mels), files / "vocoder.onnx")
    return {"sample_rate": h.sampling_rate}


def tts_step(root: Path, recipe: Recipe, extra: dict) -> None:
    t = recipe.tts
    params = (_piper_files if t.kind == "piper" else _fastspeech2_files)(root, recipe, extra)
    cfg = python_model(
        "tts", [tensor("reply_text", T.TYPE_STRING, [1]), tensor("emotion", T.TYPE_STRING, [1]),
                tensor("turn", T.TYPE_STRING, [1])],
        [out("audio", T.TYPE_FP32, [-1]), out("sample_rate", T.TYPE_INT32, [1])],
        {"kind": t.kind, "fps": recipe.video.fps, "intra_op_threads": recipe.serving.onnx_threads, **params},
        instances=SEQUENTIAL,
    )
    repo.write_config(root / "tts", cfg)
    repo.install_python_model(root / "tts", "tts")


def wav2lip_step(root: Path, recipe: Recipe, extra: dict) -> None:
    """The Wav2Lip generator as its own model (ONNX), called by lipsync through BLS."""
    model = load_wav2lip(recipe.wav2lip.checkpoint)
    if recipe.compress.wav2lip.active:
        from talkserve.compress.tasks import Wav2LipTask

        task = Wav2LipTask(model, _data(recipe, extra))
        _compress(task, recipe.compress.wav2lip, recipe, extra, root / "wav2lip" / "1", "model.onnx")
    else:
        report = export_wav2lip(model, root / "wav2lip" / "1" / "model.onnx")
        extra["reports"]["wav2lip"] = {"max_abs_diff": report.max_abs_diff,
                                       "checkpoint": str(recipe.wav2lip.checkpoint or "starter")}
    gen = python_model(
        "wav2lip", [tensor("mel", T.TYPE_FP32, [-1, 1, 80, 16]), tensor("face", T.TYPE_FP32, [-1, 6, 96, 96])],
        [out("frames", T.TYPE_FP32, [-1, 3, 96, 96])],
        {"onnx_file": "model.onnx", "intra_op_threads": recipe.serving.onnx_threads},
        instances=recipe.wav2lip.instances,
    )
    repo.write_config(root / "wav2lip", gen)
    repo.install_python_model(root / "wav2lip", "onnx_session")


def lipsync_step(root: Path, recipe: Recipe, extra: dict) -> None:
    """lipsync draws with Wav2Lip (the generator model) or the procedural warp (no model at all)."""
    kind = recipe.lipsync.kind
    if kind == "wav2lip":
        wav2lip_step(root, recipe, extra)
    else:
        extra["reports"]["lipsync"] = {"kind": kind}
    w = recipe.wav2lip
    lipsync = python_model(
        "lipsync",
        [tensor("reply_text", T.TYPE_STRING, [1]), tensor("chunk_index", T.TYPE_INT32, [1]),
         tensor("audio", T.TYPE_FP32, [-1]), tensor("sample_rate", T.TYPE_INT32, [1]),
         tensor("avatar_id", T.TYPE_STRING, [1]), tensor("started_at", T.TYPE_FP64, [1]),
         tensor("emotion", T.TYPE_STRING, [1]), tensor("turn", T.TYPE_STRING, [1]),
         tensor("user_text", T.TYPE_STRING, [1]), tensor("stream", T.TYPE_STRING, [1])],
        [out(n, dtype, dims) for n, dtype, dims in repo.RESPONSE] + [out("user_text", T.TYPE_STRING, [1])],
        {"avatar_db": recipe.serving.configured_avatar_db(), "fps": recipe.video.fps, "kind": kind,
         "warp": recipe.lipsync.warp.model_dump_json(), "degrade": recipe.lipsync.degrade.model_dump_json(),
         "first_part_frames": w.first_part_frames, "part_frames": w.part_frames, "batch_frames": w.batch_frames,
         "stream_lease_seconds": recipe.serving.stream_lease_seconds},
        instances=SEQUENTIAL, decoupled=True,
    )
    repo.write_config(root / "lipsync", lipsync)
    repo.install_python_model(root / "lipsync", "lipsync")


def asr_step(root: Path, recipe: Recipe, extra: dict) -> None:
    """Whisper (faster-whisper directory, copied in so the repository stands alone) + silero-vad."""
    from talkserve.asr import Transcriber, default_model_dir

    a = recipe.asr
    src = a.model or default_model_dir()
    Transcriber(src, a.language, a.beam_size, a.compute_type)  # fail the build, not the server, on a bad model
    shutil.copytree(src, root / "asr" / "1" / "whisper")
    cfg = python_model(
        "asr", [tensor("audio", T.TYPE_FP32, [-1]), tensor("sample_rate", T.TYPE_INT32, [1])],
        [out("text", T.TYPE_STRING, [1]), out("started_at", T.TYPE_FP64, [1])],
        {"language": a.language or "", "beam_size": a.beam_size, "compute_type": a.compute_type,
         "threads": a.threads, "max_audio_seconds": a.max_audio_seconds, "vad": a.vad,
         "vad_threshold": a.vad_threshold, "min_silence_ms": a.min_silence_ms, "preload": a.preload},
    )
    repo.write_config(root / "asr", cfg)
    repo.install_python_model(root / "asr", "asr")
    cancel = python_model("cancel", [tensor("conversation_id", T.TYPE_STRING, [1])],
                          [out("cancelled", T.TYPE_BOOL, [1])], {})
    repo.write_config(root / "cancel", cancel)
    repo.install_python_model(root / "cancel", "cancel")


def capacity_step(root: Path, recipe: Recipe, extra: dict) -> None:
    """`admit`, talking_head's first step, with the stream limit: the recipe's, or calibrated here."""
    limit = recipe.serving.max_streams
    if limit is None:
        from talkserve.targets.calibrate import calibrate

        extra["capacity"] = calibrate(root)
        limit = extra["capacity"]["max_streams"]
    else:
        extra["capacity"] = {"max_streams": limit, "from": "recipe"}
    admit = python_model(
        "admit",
        [tensor("avatar_id", T.TYPE_STRING, [1]), tensor("conversation_id", T.TYPE_STRING, [1], optional=True)],
        [out("stream", T.TYPE_STRING, [1])],
        {"max_streams": limit, "stream_lease_seconds": recipe.serving.stream_lease_seconds},
        instances=2,  # a refusal must not wait behind an admission
    )
    repo.write_config(root / "admit", admit)
    repo.install_python_model(root / "admit", "admit")


def ensemble_step(root: Path, recipe: Recipe, extra: dict) -> None:
    repo.write_config(root / repo.ENSEMBLE, repo.ensemble_config(repo.ENSEMBLE))
    repo.write_config(root / repo.VOICE_ENSEMBLE, repo.ensemble_config(repo.VOICE_ENSEMBLE, voice=True))


def report_step(root: Path, recipe: Recipe, extra: dict) -> None:
    """compression_report.{md,json,png} beside the models; the gates' verdicts go into the manifest."""
    from talkserve.compress.report import write_report

    extra.pop("_data", None)
    reports = extra.pop("_compression", [])
    if reports:
        extra["compression"] = {r.name: {"served": r.served, "cpu_form": r.cpu_form,
                                         "gates": [g.as_dict() for g in r.gates],
                                         "accepted_failures": r.accepted_failures} for r in reports}
        extra["compression_report_markdown"] = write_report(reports, root, recipe.name)


STEPS = [
    ("check inputs", check_inputs),
    ("export LLM decoder (ONNX, KV cache)", llm_step),
    ("package TTS (Piper voice or FastSpeech2 + HiFi-GAN)", tts_step),
    ("lip-sync: Wav2Lip (ONNX) or the procedural warp", lipsync_step),
    ("package ASR (Whisper + silero-vad) and barge-in", asr_step),
    ("admission: stream limit (recipe, or calibrated on this machine)", capacity_step),
    ("write talking_head and talking_head_voice ensembles", ensemble_step),
    ("write compression report", report_step),
]
