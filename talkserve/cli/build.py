"""`talkserve build`, `engines`, `train-llm`, `train-lipsync`: making what is served."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from talkserve.cli import DEFAULT_OUTPUT, app, fail, resolve_recipe
from talkserve.recipe import Recipe, RecipeError, load_recipe


def do_build(recipe: Recipe, output: Path, steps: list | None = None, needed=None) -> Path:
    from talkserve.server.repository import build
    from talkserve.targets.cpu import STEPS

    start = time.monotonic()
    current = build(recipe, output, steps or STEPS, progress=lambda s: typer.echo(f"  · {s}"), needed=needed)
    report = current / "compression_report.md"
    if report.is_file():
        typer.echo(report.read_text(encoding="utf-8"))
    typer.echo(capacity_line(current))
    typer.echo(f"built {recipe.name} → {current} ({current.resolve().name}) in {time.monotonic() - start:.1f}s")
    return current


def capacity_line(current: Path) -> str:
    """The stream limit the build wrote, and where it came from."""
    import json

    c = json.loads((current / "talkserve_build.json").read_text()).get("capacity") or {}
    if c.get("from") != "served run":
        return f"stream limit: serving.max_streams = {c.get('max_streams')} ({c.get('from', 'unknown')})"
    held = "" if c["real_time"] else "; even 1 stream missed real time here"
    return (f"stream limit: serving.max_streams = {c['max_streams']}, measured by serving this build "
            f"({len(c['steps'])} runs of 1 to {c['steps'][-1]['streams']} streams, {c['seconds']:.0f}s{held})")


@app.command("build")
def build_cmd(
    recipe: Annotated[str, typer.Argument(
        help="Recipe YAML path or preset name (fp32, int8, pruned30-int8, pruned50-int8)")] = "fp32",
    output: Annotated[Path, typer.Option(help="Repository root; Triton serves <output>/current")] = DEFAULT_OUTPUT,
    accept_failed_gates: Annotated[bool, typer.Option(
        help="Publish even if a quality gate fails (recorded in the report and manifest)")] = False,
    target: Annotated[str | None, typer.Option(
        help="cpu (ONNX Runtime) or gpu (TensorRT engines for this node's GPU); default: the recipe's")] = None,
) -> None:
    """Compress (per the recipe), export, validate and package every model into a Triton model repository."""
    from talkserve.targets.gpu import GPUTargetError, gpu_steps, require_gpu_build

    resolved = resolve_recipe(recipe)
    if target not in (None, "cpu", "gpu"):
        fail(f"--target {target!r}: choose cpu or gpu", 2)
    resolved.target = target or resolved.target
    if accept_failed_gates:
        resolved.compress.accept_failed_gates = True
    steps = None
    if resolved.target == "gpu":
        try:  # before any work: minutes of compression must not end in "no GPU"
            steps = gpu_steps(require_gpu_build())
        except GPUTargetError as e:
            fail(str(e))
    try:
        do_build(resolved, output, steps)
    except (ValueError, RuntimeError, OSError) as e:
        fail(f"build failed, previous repository untouched: {e}")


@app.command()
def engines(
    output: Annotated[Path, typer.Option(help="Repository root holding `current`")] = DEFAULT_OUTPUT,
    check: Annotated[bool, typer.Option(
        help="Only check that this node's GPU has a plan for every engine (exit 1 if not)")] = False,
    if_missing: Annotated[bool, typer.Option(
        help="Build only if this node's GPU has no plans yet (serving pods' initContainer: the first pod of an "
             "architecture builds, the others wait for it and find them)")] = False,
) -> None:
    """Add TensorRT engines for this node's GPU to the published repository (one repository, mixed
    GPU pool: run it once on a node of each architecture). Publishes a new release atomically."""
    from talkserve.server.gpus import node_problems
    from talkserve.targets.gpu import GPUTargetError, add_engine_steps, require_gpu_build

    def missing() -> list[str]:
        return node_problems(output / "current", require_engines=True)

    if check:
        problems = missing()
        if problems:
            fail("; ".join(problems))
        typer.echo("every engine has a plan for this node")
        return
    if if_missing and not missing():
        typer.echo("every engine already has a plan for this node")
        return
    try:
        gpu = require_gpu_build()
        recipe = load_recipe(output / "current" / "talkserve_recipe.yaml")
    except (GPUTargetError, RecipeError) as e:
        fail(str(e))
    recipe.target = "gpu"
    try:
        needed = (lambda: bool(missing())) if if_missing else None  # asked again under the build lock
        do_build(recipe, output, add_engine_steps(output, gpu), needed=needed)
    except (ValueError, RuntimeError, OSError) as e:
        fail(f"adding engines failed, previous repository untouched: {e}")


@app.command("train-llm")
def train_llm(
    out: Annotated[Path, typer.Option(help="Hugging Face directory to write")] = Path("starter_llm"),
    steps: Annotated[int | None, typer.Option(help="Optimizer steps (default: the starter's schedule)")] = None,
) -> None:
    """Train the starter LLM (tiny Llama) on the built-in corpus; reproducible from its seed."""
    from talkserve.training.llm import TrainConfig, train

    train(out, TrainConfig() if steps is None else TrainConfig(steps=steps))
    typer.echo(f"starter LLM → {out}")


@app.command("train-lipsync")
def train_lipsync(
    out: Annotated[Path, typer.Option(help="Directory for wav2lip.pth, config.json and the resumable state")] = Path(
        "starter_wav2lip"),
    steps: Annotated[int | None, typer.Option(help="Optimizer steps (default: the starter's schedule)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Frames per step")] = None,
    video: Annotated[Path | None, typer.Option(help="Train on this talking video (its frames and audio)")] = None,
    init: Annotated[Path | None, typer.Option(help="Start from this checkpoint (official layout)")] = None,
    audio: Annotated[list[Path] | None, typer.Option(help="Extra speech WAVs for the procedural teacher")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the init and of every batch")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/train_state.pt when present")] = True,
) -> None:
    """Train Wav2Lip (published size, official layout): from the procedural warp teacher, or on a video."""
    from talkserve.training.lipsync import LipsyncTrainConfig, train

    given = {"steps": steps, "batch_size": batch_size, "video": video and str(video), "init": init and str(init)}
    if video is not None and not video.is_file():
        fail(f"{video}: no such file")
    for wav in audio or []:
        if not wav.is_file():
            fail(f"{wav}: no such file")
    cfg = LipsyncTrainConfig(seed=seed, **{k: v for k, v in given.items() if v is not None})
    try:
        path = train(out, cfg, audio or [], resume=resume)
    except ValueError as e:
        fail(str(e))
    typer.echo(f"Wav2Lip checkpoint → {path} (config beside it)")
