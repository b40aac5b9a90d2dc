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
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TypeVar

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from talkserve import spec
from talkserve.recipe import Recipe, dump_recipe

__all__ = ["ENSEMBLE", "VOICE_ENSEMBLE", "BuildContext", "Step", "build", "engine_configs", "ensemble_config",
           "has_engines", "is_published", "model_config", "publish", "read_config", "read_configs",
           "read_params", "tensor", "update_params", "write_config", "write_params", "write_python_model"]

P = TypeVar("P", bound=spec.Params)

SERVING_MODELS = Path(__file__).parents[1] / "serving" / "models"
ENSEMBLE = spec.TALKING_HEAD.name
VOICE_ENSEMBLE = spec.TALKING_HEAD_VOICE.name
KEEP_RELEASES = 3
T = mc.DataType


def tensor(t: spec.Tensor, cls=mc.ModelInput, strip_batch: bool = False):
    """A spec tensor as a config input (or output: `cls=mc.ModelOutput`); `strip_batch` for a model
    with Triton batching, whose dims leave out the batch."""
    kw = {"optional": True} if t.optional and cls is mc.ModelInput else {}
    return cls(name=t.name, data_type=T.Value(f"TYPE_{t.dtype}"), dims=list(t.dims)[1 if strip_batch else 0:], **kw)


def model_config(s: spec.ModelSpec, params: spec.Params, instances: int | None = None) -> mc.ModelConfig:
    """config.pbtxt of a python model, from its spec; `params` (the spec's class) as one JSON parameter."""
    if not isinstance(params, s.params):
        raise TypeError(f"{s.name} takes {s.params.__name__}, not {type(params).__name__}")
    count = s.instances if s.instances is not None else instances
    if count is None:
        raise ValueError(f"{s.name}: the recipe sets its instance count; none given")
    cfg = mc.ModelConfig(
        name=s.name, backend="python", max_batch_size=0,
        input=[tensor(t) for t in s.inputs], output=[tensor(t, mc.ModelOutput) for t in s.outputs],
        instance_group=[mc.ModelInstanceGroup(count=count, kind=mc.ModelInstanceGroup.KIND_CPU)],
    )
    cfg.parameters[spec.PARAMS].string_value = params.model_dump_json()
    if s.decoupled:
        cfg.model_transaction_policy.decoupled = True
    return cfg


def write_python_model(root: Path, s: spec.ModelSpec, params: spec.Params, instances: int | None = None) -> None:
    """The model's config from its spec and its model.py (serving/models/<source>.py)."""
    write_config(root / s.name, model_config(s, params, instances))
    install_python_model(root / s.name, s.source)


def read_params(model_dir: Path, cls: type[P]) -> P:
    cfg = read_config(model_dir)
    return cls.from_config({"name": cfg.name, "parameters": {k: {"string_value": v.string_value}
                                                             for k, v in cfg.parameters.items()}})


def write_params(model_dir: Path, params: spec.Params) -> None:
    """Replace a built model's parameters (same class), keeping the rest of its config."""
    cfg = read_config(model_dir)
    cfg.parameters[spec.PARAMS].string_value = params.model_dump_json()
    write_config(model_dir, cfg)


def set_instances(model_dir: Path, count: int) -> None:
    """Change a built model's instance count, as a recipe with that count would write it."""
    cfg = read_config(model_dir)
    cfg.instance_group[0].count = count
    write_config(model_dir, cfg)


def update_params(model_dir: Path, **changes) -> spec.Params:
    """Change some of a built python model's parameters, validated by its Params class."""
    cls = spec.PARAMS_OF[Path(model_dir).name]
    params = cls.model_validate({**read_params(model_dir, cls).model_dump(), **changes})
    write_params(model_dir, params)
    return params


def ensemble_config(s: spec.ModelSpec) -> mc.ModelConfig:
    """talking_head: admit (a stream slot) → llm (one response per sentence) → tts → lipsync (parts of
    each sentence). talking_head_voice: asr (a stream slot, then the text heard) → llm → tts → lipsync;
    each response also carries `user_text`."""
    voice = s is spec.TALKING_HEAD_VOICE

    def step(model: spec.ModelSpec, inputs: dict[str, str], outputs: dict[str, str]):
        unknown = (set(inputs) - set(model.input_names())) | (set(outputs) - set(model.output_names()))
        if unknown:  # caught here, at the build, not by Triton at load
            raise ValueError(f"{s.name}: {model.name} has no tensor {', '.join(sorted(unknown))}")
        return mc.ModelEnsembling.Step(model_name=model.name, model_version=-1, input_map=inputs, output_map=outputs)

    llm_inputs = {"avatar_id": "avatar_id", **{t.name: t.name for t in spec.OPTIONAL_INPUTS}}
    steps = []
    if voice:
        # asr takes the stream slot itself: a separate `admit` step in this ensemble made Triton 2.51
        # intermittently keep it from unloading at shutdown (a reply state left behind).
        steps.append(step(spec.ASR, {"audio": "user_audio", "sample_rate": "user_sample_rate",
                                     "conversation_id": "conversation_id"},
                          {"text": "heard_text", "started_at": "heard_at", "stream": "stream_id"}))
        llm_inputs |= {"text": "heard_text", "started_at": "heard_at", "stream": "stream_id"}
    else:
        # A refused reply costs nothing: the slot is taken before generation.
        steps.append(step(spec.ADMIT, {"avatar_id": "avatar_id", "conversation_id": "conversation_id"},
                          {"stream": "stream_id"}))
        llm_inputs |= {"text": "text", "stream": "stream_id"}
    steps += [
        step(spec.LLM, llm_inputs, spec.SENTENCE),
        step(spec.TTS, {"reply_text": "sentence_text", "emotion": "sentence_emotion", "turn": "sentence_turn"},
             {"audio": "sentence_audio", "sample_rate": "sentence_sample_rate"}),
        # every response tensor comes out of the last (decoupled) step
        step(spec.LIPSYNC, {**spec.SENTENCE, "audio": "sentence_audio", "sample_rate": "sentence_sample_rate"},
             {n: n for n in s.output_names()}),
    ]
    cfg = mc.ModelConfig(
        name=s.name, platform="ensemble", max_batch_size=0,
        input=[tensor(t) for t in s.inputs], output=[tensor(t, mc.ModelOutput) for t in s.outputs],
        ensemble_scheduling=mc.ModelEnsembling(step=steps),
    )
    cfg.model_transaction_policy.decoupled = s.decoupled
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


@dataclass
class BuildContext:
    """What a build's steps hand on to later steps and record in the manifest."""

    build_id: str
    reports: dict[str, dict] = field(default_factory=dict)  # export checks per model, for the manifest
    compressed: list = field(default_factory=list)  # compress.pipeline.ModelReport of each compressed model
    compression: dict | None = None  # the gates' verdicts per model (written by the report step)
    compression_report_markdown: str | None = None
    capacity: dict | None = None  # the stream limit and how it was found
    admission: spec.AdmitParams | None = None  # that limit, for both entry models (admit, asr); not recorded
    engines: dict = field(default_factory=dict)  # TensorRT plans per model and compute capability
    based_on: str | None = None  # `talkserve engines`: the build whose repository it extended
    data: object | None = None  # compress.data.DataSource shared by the compression steps (not recorded)

    def manifest(self) -> dict:
        fields = {"build_id": self.build_id, "reports": self.reports, "compression": self.compression,
                  "compression_report_markdown": self.compression_report_markdown, "capacity": self.capacity,
                  "engines": self.engines or None, "based_on": self.based_on}
        return {k: v for k, v in fields.items() if v is not None}


def write_manifest(root: Path, recipe: Recipe, ctx: BuildContext) -> None:
    files = {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}
    (root / "talkserve_recipe.yaml").write_text(dump_recipe(recipe))
    manifest = {"recipe": recipe.model_dump(mode="json"), "versions": versions(), "files": files,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **ctx.manifest()}
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


Step = Callable[[Path, Recipe, BuildContext], None]


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
    ctx = BuildContext(build_id)
    try:
        for label, step in steps:
            progress(label)
            step(staging, recipe, ctx)
        write_manifest(staging, recipe, ctx)
        return publish(output, staging, build_id)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        lock.close()
