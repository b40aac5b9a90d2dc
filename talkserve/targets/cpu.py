"""CPU target: ONNX (validated vs PyTorch) run by ONNX Runtime inside python models."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from talkserve import spec
from talkserve.export import export_llm_decoder, export_wav2lip
from talkserve.models.llm import hf_directory, load_llm, source_of
from talkserve.models.wav2lip import load_wav2lip
from talkserve.recipe import Recipe
from talkserve.runtime.tokenizer import check_same_as_transformers
from talkserve.server import repository as repo
from talkserve.server.repository import BuildContext

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "tokenizer.model", "vocab.json", "merges.txt", "generation_config.json", "config.json")


def check_inputs(root: Path, recipe: Recipe, ctx: BuildContext) -> None:
    """Fail in a second on a missing input, not after minutes of export."""
    from talkserve.models.llm import check_source

    check_source(recipe.llm.resolved_path())
    t = recipe.tts
    tts_files = t.resolved_paths() if t.kind == "piper" else (t.acoustic, t.vocoder)
    for path in [*tts_files, recipe.wav2lip.checkpoint]:
        if path is not None and not Path(path).is_file():
            raise ValueError(f"{path} does not exist")
    if recipe.compress.data_dir is not None and not recipe.compress.data_dir.is_dir():
        raise ValueError(f"compress.data_dir {recipe.compress.data_dir} is not a directory")
    if recipe.target == "gpu" and recipe.serving.max_streams is None:  # before minutes of compression
        raise ValueError("serving.max_streams is null, which measures the limit by serving the build here; the "
                         "embedded tritonserver cannot serve TensorRT engines: set serving.max_streams for this "
                         "GPU (`bench/pipeline.py --capacity` on the node measures it)")


def _data(recipe: Recipe, ctx: BuildContext):
    """One calibration/distillation data source per build, shared by every model."""
    from talkserve.compress.data import DataSource

    if ctx.data is None:
        ctx.data = DataSource(recipe.compress.data_dir, recipe.compress.held_out, recipe.compress.max_examples)
    return ctx.data


def _compress(task, cfg, recipe: Recipe, ctx: BuildContext, version_dir: Path, served_name: str):
    """Run the model's compression schedule; install the served ONNX (and the TensorRT Q/DQ form)."""
    from talkserve.compress.pipeline import compress_model

    c = recipe.compress
    with tempfile.TemporaryDirectory(prefix=f"talkserve-{task.name}-") as work:
        work = Path(work)
        student, report = compress_model(task, cfg, work, c.accept_failed_gates, c.latency_runs)
        version_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / report.served, version_dir / served_name)
        if report.trt:
            stem = served_name.removesuffix(".onnx")
            shutil.copyfile(work / report.trt, version_dir / f"{stem}.qdq_s8.onnx")
    ctx.compressed.append(report)
    return student


def llm_step(root: Path, recipe: Recipe, ctx: BuildContext) -> None:
    src = hf_directory(recipe.llm.resolved_path())  # a GGUF file: converted once, keyed by its sha256
    ctx.reports["llm_source"] = source_of(src)
    model, tokenizer = load_llm(src)
    if recipe.compress.llm.active:
        from talkserve.compress.tasks import LLMTask

        task = LLMTask(model, tokenizer, _data(recipe, ctx), corpus=recipe.llm.is_starter())
        model = _compress(task, recipe.compress.llm, recipe, ctx, root / "llm_decoder" / "1", "model.onnx")
        model.save_pretrained(root / "llm" / "1" / "compressed_model")  # loads as a normal HF model
    else:
        report = export_llm_decoder(model, root / "llm_decoder" / "1" / "model.onnx")
        ctx.reports["llm_decoder"] = {"max_abs_diff": report.max_abs_diff}
    layout = spec.KVLayout.from_config(model.config)
    m = recipe.llm
    max_sentences, repetition_penalty = m.shaping()
    params = spec.LLMParams(
        kv_layout=layout, max_new_tokens=m.max_new_tokens, max_new_tokens_limit=m.max_new_tokens_limit,
        max_text_chars=recipe.serving.max_text_chars, avatar_db=recipe.serving.configured_avatar_db(),
        cpu_nice=m.cpu_nice, max_history_turns=m.max_history_turns, max_prompt_tokens=m.max_prompt_tokens,
        prefix_cache_mib=m.prefix_cache_mib, persona=m.persona, spoken_filter=m.spoken_filter,
        max_sentences=max_sentences, repetition_penalty=repetition_penalty)
    repo.write_python_model(root, spec.LLM, params, m.instances or 1)  # null: sized with the limit (capacity_step)
    tok_dir = root / "llm" / "1" / "tokenizer"
    tok_dir.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, tok_dir / name)
    check_same_as_transformers(tok_dir)  # the stub tokenises without transformers: same ids or no build


def _piper_files(root: Path, recipe: Recipe, ctx: BuildContext) -> dict:
    from talkserve.models.piper_tts import PiperTTS

    model, config = recipe.tts.resolved_paths()
    PiperTTS(model, config)  # fail the build, not the server, on a bad voice
    files = root / "tts" / "1"
    files.mkdir(parents=True)
    if recipe.compress.piper.active:
        from talkserve.compress.tasks import PiperTask

        _compress(PiperTask(model, config, _data(recipe, ctx)), recipe.compress.piper, recipe, ctx, files,
                  "voice.onnx")
    else:
        shutil.copyfile(model, files / "voice.onnx")
    shutil.copyfile(config, files / "voice.onnx.json")
    t = recipe.tts
    return {"length_scale": t.length_scale, "noise_scale": t.noise_scale, "noise_w_scale": t.noise_w_scale}


def _fastspeech2_files(root: Path, recipe: Recipe, ctx: BuildContext) -> dict:
    from talkserve.compress.tasks import AcousticTask, VocoderTask
    from talkserve.export import acoustic_spec, export, vocoder_spec
    from talkserve.models.fastspeech2 import load_fastspeech2
    from talkserve.models.hifigan import CONFIGS, load_hifigan

    t, c, files = recipe.tts, recipe.compress, root / "tts" / "1"
    acoustic = load_fastspeech2(t.acoustic, t.acoustic_seed)
    h = CONFIGS[t.vocoder_config]
    vocoder = load_hifigan(t.vocoder, h, t.vocoder_seed)
    if t.vocoder is None and t.vocoder_fit_steps:
        from talkserve.training.vocoder import FitConfig, fit_to_speech

        fit_to_speech(vocoder, _data(recipe, ctx).speech.train, FitConfig(steps=t.vocoder_fit_steps))
    if c.acoustic.active:
        _compress(AcousticTask(acoustic, _data(recipe, ctx)), c.acoustic, recipe, ctx, files, "acoustic.onnx")
    else:
        export(acoustic, acoustic_spec(), files / "acoustic.onnx")
    if c.vocoder.active:
        _compress(VocoderTask(vocoder, _data(recipe, ctx)), c.vocoder, recipe, ctx, files, "vocoder.onnx")
    else:
        export(vocoder, vocoder_spec(h.num_mels), files / "vocoder.onnx")
    return {"sample_rate": h.sampling_rate}


def tts_step(root: Path, recipe: Recipe, ctx: BuildContext) -> None:
    t = recipe.tts
    params = (_piper_files if t.kind == "piper" else _fastspeech2_files)(root, recipe, ctx)
    repo.write_python_model(root, spec.TTS, spec.TTSParams(
        kind=t.kind, fps=recipe.video.fps, intra_op_threads=recipe.serving.onnx_threads, **params))


def wav2lip_step(root: Path, recipe: Recipe, ctx: BuildContext) -> None:
    """The Wav2Lip generator as its own model (ONNX), called by lipsync through BLS."""
    model = load_wav2lip(recipe.wav2lip.checkpoint)
    if recipe.compress.wav2lip.active:
        from talkserve.compress.tasks import Wav2LipTask

        task = Wav2LipTask(model, _data(recipe, ctx))
        _compress(task, recipe.compress.wav2lip, recipe, ctx, root / "wav2lip" / "1", "model.onnx")
    else:
        report = export_wav2lip(model, root / "wav2lip" / "1" / "model.onnx")
        ctx.reports["wav2lip"] = {"max_abs_diff": report.max_abs_diff,
                                  "checkpoint": str(recipe.wav2lip.checkpoint or "starter")}


def lipsync_step(root: Path, recipe: Recipe, ctx: BuildContext) -> None:
    """lipsync draws with Wav2Lip (the generator model) or the procedural warp (no model at all)."""
    kind = recipe.lipsync.kind
    if kind == "wav2lip":
        wav2lip_step(root, recipe, ctx)
    else:
        ctx.reports["lipsync"] = {"kind": kind}
    w = recipe.wav2lip
    repo.write_python_model(root, spec.LIPSYNC, spec.LipsyncParams(
        kind=kind, fps=recipe.video.fps, avatar_db=recipe.serving.configured_avatar_db(), warp=recipe.lipsync.warp,
        degrade=recipe.lipsync.degrade, first_part_frames=w.first_part_frames, part_frames=w.part_frames,
        batch_frames=w.batch_frames, stream_lease_seconds=recipe.serving.stream_lease_seconds,
        unread_parts=recipe.serving.unread_parts, unread_timeout_s=recipe.serving.unread_timeout_s,
        max_part_mb=recipe.serving.max_part_mb, unreceipted_lead_s=recipe.serving.unreceipted_lead_s,
        unreceipted_mb=recipe.serving.unreceipted_mb),
        recipe.lipsync.instances)


def asr_step(root: Path, recipe: Recipe, ctx: BuildContext) -> None:
    """Whisper (faster-whisper directory, copied in so the repository stands alone) + silero-vad."""
    from talkserve.voice.asr import Transcriber, default_model_dir

    a = recipe.asr
    src = a.model or default_model_dir()
    Transcriber(src, a.language, a.beam_size, a.compute_type)  # fail the build, not the server, on a bad model
    shutil.copytree(src, root / "asr" / "1" / "whisper")
    repo.write_python_model(root, spec.ASR, spec.AsrParams(
        language=a.language, beam_size=a.beam_size, compute_type=a.compute_type, threads=a.threads,
        max_audio_seconds=a.max_audio_seconds, vad=a.vad, vad_threshold=a.vad_threshold,
        min_silence_ms=a.min_silence_ms, preload=a.preload, admission=ctx.admission))
    repo.write_python_model(root, spec.CANCEL, spec.NoParams())
    repo.write_python_model(root, spec.ACK, spec.NoParams())


def onnx_runtime_step(root: Path, recipe: Recipe, ctx: BuildContext) -> None:
    """The exported decoder and generator served by ONNX Runtime in python models (the GPU target
    composes its engine step here instead)."""
    threads = recipe.serving.onnx_threads
    layout = repo.read_params(root / "llm", spec.LLMParams).kv_layout
    repo.write_python_model(root, spec.llm_decoder(layout), spec.OnnxParams(
        intra_op_threads=threads, cpu_nice=recipe.llm.cpu_nice), recipe.llm.decoder_instances)
    if recipe.lipsync.kind == "wav2lip":
        params = spec.OnnxParams(intra_op_threads=threads, arena_release_s=recipe.wav2lip.arena_release_s)
        repo.write_python_model(root, spec.WAV2LIP, params, recipe.wav2lip.instances)


def capacity_step(root: Path, recipe: Recipe, ctx: BuildContext) -> None:
    """The stream limit for `admit`, talking_head's first step, and for `asr`, talking_head_voice's
    (written in the next step): the recipe's, or until `calibration_step` measures it, the most the
    calibration runs."""
    limit = recipe.serving.max_streams or recipe.serving.calibration_streams
    ctx.capacity = {"max_streams": limit, "from": "recipe" if recipe.serving.max_streams else "not measured yet"}
    ctx.admission = spec.AdmitParams(max_streams=limit, stream_lease_seconds=recipe.serving.stream_lease_seconds)
    repo.write_python_model(root, spec.ADMIT, ctx.admission)
    _size_generation_loops(root, recipe, limit)


def _size_generation_loops(root: Path, recipe: Recipe, limit: int) -> None:
    """llm.instances null: a generation loop per admitted stream, and a spare for a barge-in's reply."""
    if recipe.llm.instances is None:
        repo.set_instances(root / spec.LLM.name, limit + 1)


def calibration_step(root: Path, recipe: Recipe, ctx: BuildContext) -> None:
    """`serving.max_streams` null: serve the finished repository here and step the stream count
    (talkserve.targets.calibrate); the limit that held goes into both entry models."""
    if recipe.serving.max_streams is not None:
        return
    from talkserve.targets.calibrate import calibrate

    s = recipe.serving
    ctx.capacity = calibrate(root, s.calibration_streams, s.first_chunk_p95_s, s.calibration_runs,
                             progress=lambda m: print(f"    {m}"))
    ctx.admission = ctx.admission.model_copy(update={"max_streams": ctx.capacity["max_streams"]})
    repo.write_python_model(root, spec.ADMIT, ctx.admission)
    repo.update_params(root / spec.ASR.name, admission=ctx.admission.model_dump())
    _size_generation_loops(root, recipe, ctx.capacity["max_streams"])


def ensemble_step(root: Path, recipe: Recipe, ctx: BuildContext) -> None:
    for ensemble in spec.ENSEMBLES:
        repo.write_config(root / ensemble.name, repo.ensemble_config(ensemble))


def report_step(root: Path, recipe: Recipe, ctx: BuildContext) -> None:
    """compression_report.{md,json,png} beside the models; the gates' verdicts go into the manifest."""
    from talkserve.compress.report import write_report

    ctx.data = None
    if ctx.compressed:
        ctx.compression = {r.name: {"served": r.served, "cpu_form": r.cpu_form,
                                    "gates": [g.as_dict() for g in r.gates],
                                    "accepted_failures": r.accepted_failures} for r in ctx.compressed}
        ctx.compression_report_markdown = write_report(ctx.compressed, root, recipe.name)


ONNX_RUNTIME = "serve the LLM decoder and Wav2Lip with ONNX Runtime"
STEPS = [
    ("check inputs", check_inputs),
    ("export LLM decoder (ONNX, KV cache)", llm_step),
    ("package TTS (Piper voice or FastSpeech2 + HiFi-GAN)", tts_step),
    ("lip-sync: Wav2Lip (ONNX) or the procedural warp", lipsync_step),
    (ONNX_RUNTIME, onnx_runtime_step),
    ("admission: stream limit (the recipe's, or provisional until measured)", capacity_step),
    ("package ASR (Whisper + silero-vad), barge-in and read receipts", asr_step),
    ("write talking_head and talking_head_voice ensembles", ensemble_step),
    ("write compression report", report_step),
    ("admission: stream limit measured by serving this build (serving.max_streams null)", calibration_step),
]
