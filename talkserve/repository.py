"""`talkserve build`: recipe → Triton model repository, published atomically.

Layout of an output directory (default `model_repository/`):

    releases/<build-id>/      one complete repository per build (Triton loads one of these)
    current -> releases/<id>  symlink swapped with rename(2): readers see the old or the new build
                              in full, never a half-written one

`config.pbtxt` files are made from Triton's own `model_config` protobuf, so a field name that
Triton does not know cannot be written.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from talkserve.recipe import Recipe, dump_recipe

SERVING_MODELS = Path(__file__).parent / "serving" / "models"
ENSEMBLE = "talking_head"
VOICE_ENSEMBLE = "talking_head_voice"
KEEP_RELEASES = 3
T = mc.DataType
# One streamed response of talking_head (the request contract).
RESPONSE = [("reply_text", T.TYPE_STRING, [1]), ("chunk_index", T.TYPE_INT32, [1]),
            ("part_index", T.TYPE_INT32, [1]), ("audio", T.TYPE_FP32, [-1]), ("sample_rate", T.TYPE_INT32, [1]),
            ("video", T.TYPE_UINT8, [-1, -1, -1, 3])]


def tensor(name: str, dtype: int, dims: list[int], optional: bool = False, cls=mc.ModelInput):
    kw = {"optional": True} if optional else {}
    return cls(name=name, data_type=dtype, dims=dims, **kw)


def out(name: str, dtype: int, dims: list[int]) -> mc.ModelOutput:
    return mc.ModelOutput(name=name, data_type=dtype, dims=dims)


def python_model(name: str, inputs, outputs, params: dict[str, object], instances: int = 1,
                 decoupled: bool = False) -> mc.ModelConfig:
    cfg = mc.ModelConfig(
        name=name, backend="python", max_batch_size=0, input=inputs, output=outputs,
        instance_group=[mc.ModelInstanceGroup(count=instances, kind=mc.ModelInstanceGroup.KIND_CPU)],
    )
    for key, value in params.items():
        cfg.parameters[key].string_value = str(value)
    if decoupled:
        cfg.model_transaction_policy.decoupled = True
    return cfg


# Optional request fields of both ensembles, all consumed by llm.
OPTIONAL_INPUTS = [("max_new_tokens", T.TYPE_INT32), ("emotion", T.TYPE_STRING), ("conversation_id", T.TYPE_STRING),
                   ("history", T.TYPE_STRING)]
# What llm streams with each sentence: the sentence, and what later steps need from the request.
SENTENCE = {"reply_text": "sentence_text", "chunk_index": "sentence_index", "avatar_id": "sentence_avatar_id",
            "started_at": "request_started_at", "emotion": "sentence_emotion", "turn": "sentence_turn",
            "user_text": "sentence_user_text", "stream": "sentence_stream"}


def ensemble_config(name: str, voice: bool = False) -> mc.ModelConfig:
    """talking_head: admit (a stream slot) → llm (one response per sentence) → tts → lipsync (parts of
    each sentence). talking_head_voice: asr → llm → tts → lipsync; each response also carries `user_text`."""

    def step(model: str, inputs: dict[str, str], outputs: dict[str, str]):
        return mc.ModelEnsembling.Step(model_name=model, model_version=-1, input_map=inputs, output_map=outputs)

    # An ensemble's tensors share one namespace, so the utterance cannot be called `audio` like the
    # reply's audio in each response: it is `user_audio`, as the recognised text is `user_text`.
    first = ([tensor("user_audio", T.TYPE_FP32, [-1]), tensor("user_sample_rate", T.TYPE_INT32, [1])] if voice
             else [tensor("text", T.TYPE_STRING, [1])])
    llm_inputs = {"avatar_id": "avatar_id", **{n: n for n, _ in OPTIONAL_INPUTS}}
    steps = []
    if voice:
        # No admission here yet: with `admit` in this ensemble Triton 2.51 intermittently kept it from
        # unloading at shutdown (a reply state left behind); voice replies are not counted or refused.
        steps.append(step("asr", {"audio": "user_audio", "sample_rate": "user_sample_rate"},
                          {"text": "heard_text", "started_at": "heard_at"}))
        llm_inputs |= {"text": "heard_text", "started_at": "heard_at"}
    else:
        # A refused reply costs nothing: the slot is taken before generation.
        steps.append(step("admit", {"avatar_id": "avatar_id", "conversation_id": "conversation_id"},
                          {"stream": "stream_id"}))
        llm_inputs |= {"text": "text", "stream": "stream_id"}
    response = RESPONSE + ([("user_text", T.TYPE_STRING, [1])] if voice else [])
    steps += [
        step("llm", llm_inputs, SENTENCE),
        step("tts", {"reply_text": "sentence_text", "emotion": "sentence_emotion", "turn": "sentence_turn"},
             {"audio": "sentence_audio", "sample_rate": "sentence_sample_rate"}),
        # Triton lets a step downstream of a decoupled model take inputs only from that model's
        # lineage, so what lipsync needs from the request travels with each sentence, and every
        # response tensor comes out of the last (decoupled) step.
        step("lipsync", {**SENTENCE, "audio": "sentence_audio",
                         "sample_rate": "sentence_sample_rate"},
             {n: n for n, _, _ in response}),
    ]
    cfg = mc.ModelConfig(
        name=name, platform="ensemble", max_batch_size=0,
        input=[*first, tensor("avatar_id", T.TYPE_STRING, [1]),
               *(tensor(n, dtype, [1], optional=True) for n, dtype in OPTIONAL_INPUTS)],
        output=[out(n, dtype, dims) for n, dtype, dims in response],
        ensemble_scheduling=mc.ModelEnsembling(step=steps),
    )
    cfg.model_transaction_policy.decoupled = True
    return cfg


def read_config(model_dir: Path) -> mc.ModelConfig:
    return text_format.Parse((Path(model_dir) / "config.pbtxt").read_text(), mc.ModelConfig())


def read_configs(root: Path) -> list[mc.ModelConfig]:
    """Every model's config in a repository, in name order."""
    return [read_config(p.parent) for p in sorted(Path(root).glob("*/config.pbtxt"))]


def engine_configs(root: Path) -> list[mc.ModelConfig]:
    """The TensorRT models of a repository (a GPU-target build)."""
    return [cfg for cfg in read_configs(root) if cfg.platform == "tensorrt_plan"]


def has_engines(root: Path) -> bool:
    return bool(engine_configs(root))


def write_config(model_dir: Path, cfg: mc.ModelConfig) -> None:
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(cfg))


def install_python_model(model_dir: Path, source: str) -> None:
    shutil.copyfile(SERVING_MODELS / f"{source}.py", model_dir / "1" / "model.py")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def versions() -> dict[str, str]:
    names = ["talkserve", "torch", "transformers", "onnx", "onnxruntime", "piper-tts", "tritonclient",
             "nvidia-pytriton", "numpy"]
    found = {}
    for n in names:
        try:
            found[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            found[n] = "not installed"
    found["python"] = sys.version.split()[0]
    return found


def write_manifest(root: Path, recipe: Recipe, extra: dict) -> None:
    files = {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}
    (root / "talkserve_recipe.yaml").write_text(dump_recipe(recipe))
    manifest = {"recipe": recipe.model_dump(mode="json"), "versions": versions(), "files": files,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
    (root / "talkserve_build.json").write_text(json.dumps(manifest, indent=2))


def publish(output: Path, staging: Path, build_id: str) -> Path:
    """Move a finished build into place and swap `current` to it atomically."""
    release = output / "releases" / build_id
    os.replace(staging, release)
    link_tmp = output / f".current.{os.getpid()}"
    link_tmp.unlink(missing_ok=True)
    link_tmp.symlink_to(Path("releases") / build_id)
    os.replace(link_tmp, output / "current")  # atomic on POSIX
    current = release.resolve()
    releases = sorted((r for r in (output / "releases").iterdir() if not r.name.endswith(".partial")),
                      key=lambda r: r.stat().st_mtime, reverse=True)
    for old in releases[KEEP_RELEASES:]:
        if old.resolve() != current:
            shutil.rmtree(old, ignore_errors=True)
    return output / "current"


Step = Callable[[Path, Recipe, dict], None]


def is_published(output: Path) -> bool:
    """A finished build is in place: `current` resolves to a release with its manifest (written last)."""
    return (output / "current" / "talkserve_build.json").is_file()


def build(recipe: Recipe, output: Path, steps: list[tuple[str, Step]],
          progress: Callable[[str], None] = print, needed: Callable[[], bool] | None = None) -> Path:
    """Run `steps` into a staging directory, then publish. Any failure leaves `output` as it was.
    `needed` is asked once the build lock is held: False (another build did the work meanwhile) skips."""
    output = output.absolute()
    (output / "releases").mkdir(parents=True, exist_ok=True)
    lock = (output / ".build.lock").open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # one build per output at a time; stale staging is then safe to drop
    if needed is not None and not needed():
        lock.close()
        return output / "current"
    for stale in output.glob("releases/*.partial"):  # left by a killed build; never referenced
        shutil.rmtree(stale, ignore_errors=True)
    build_id = f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    staging = output / "releases" / f"{build_id}.partial"
    staging.mkdir()
    extra: dict = {"build_id": build_id, "reports": {}}
    try:
        for label, step in steps:
            progress(label)
            step(staging, recipe, extra)
        write_manifest(staging, recipe, extra)
        return publish(output, staging, build_id)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        lock.close()
