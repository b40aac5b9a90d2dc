"""`talkserve` command line: build, serve, drain, health, say, converse, avatar, demo, up, train-llm."""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from talkserve.recipe import SAMPLE_PORTRAIT, Recipe, RecipeError, load_recipe, talkserve_home
from talkserve.up import IMAGE

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
avatar_app = typer.Typer(no_args_is_help=True, help="Register and list avatars (portraits).")
app.add_typer(avatar_app, name="avatar")

DEFAULT_OUTPUT = Path("model_repository")


def fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def resolve_recipe(spec: str) -> Recipe:
    """A recipe file, or a preset name (build/recipes/<name>.yaml spells each preset out)."""
    from talkserve.compress.presets import PRESETS, preset

    if spec in PRESETS and not Path(spec).exists():
        return Recipe(name=spec, compress=preset(spec))
    try:
        return load_recipe(spec)
    except RecipeError as e:
        fail(str(e))


def db_path(db: Path | None) -> Path:
    return db or talkserve_home() / "avatars.db"


def do_build(recipe: Recipe, output: Path, steps: list | None = None, needed=None) -> Path:
    from talkserve.repository import build
    from talkserve.targets.cpu import STEPS

    start = time.monotonic()
    current = build(recipe, output, steps or STEPS, progress=lambda s: typer.echo(f"  · {s}"), needed=needed)
    report = current / "compression_report.md"
    if report.is_file():
        typer.echo(report.read_text(encoding="utf-8"))
    typer.echo(f"built {recipe.name} → {current} ({current.resolve().name}) in {time.monotonic() - start:.1f}s")
    return current


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
    from talkserve.gpus import node_problems
    from talkserve.recipe import load_recipe
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


@app.command()
def wait(
    output: Annotated[Path, typer.Option(help="Repository root; waits for <output>/current")] = DEFAULT_OUTPUT,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds (exit 1); 0 = never")] = 0,
    interval: Annotated[float, typer.Option(help="Seconds between looks")] = 5.0,
) -> None:
    """Wait until a build has published a repository (serving pods' first initContainer: a pod that
    starts before the build Job finishes waits here instead of crash-looping)."""
    from talkserve.repository import is_published

    start = time.monotonic()
    told = -1.0
    while not is_published(output):
        waited = time.monotonic() - start
        if timeout and waited > timeout:
            fail(f"no published repository at {output / 'current'} after {timeout:.0f}s")
        if waited - told >= 60 or told < 0:
            typer.echo(f"waiting for a published repository at {output / 'current'} ({waited:.0f}s)")
            told = waited
        time.sleep(interval)
    typer.echo(f"repository {(output / 'current').resolve().name} is published")


@app.command()
def serve(
    repository: Annotated[Path, typer.Option(help="Model repository to serve")] = DEFAULT_OUTPUT / "current",
    grpc_port: int = 8001, http_port: int = 8000, metrics_port: int = 8002,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 to serve other machines")] = "127.0.0.1",
    exit_timeout: Annotated[int, typer.Option(
        help="Seconds to let replies in flight finish on SIGTERM (new ones get UNAVAILABLE)")] = 30,
    health_interval: Annotated[float, typer.Option(
        help="Seconds between checks that every python stub lives; a dead one restarts the server")] = 10.0,
) -> None:
    """Run the embedded tritonserver on a repository until SIGTERM/SIGINT, then drain: replies in
    flight finish, new ones get UNAVAILABLE. Restart it when a python model's stub dies (Triton 2.51
    neither restarts the stub nor stops calling itself ready)."""
    from talkserve.health import live_stubs, python_instances
    from talkserve.serve import Ports, Server, ServerError

    server = Server(repository, Ports(grpc_port, http_port, metrics_port), exit_timeout=exit_timeout, host=host)
    stop = {"now": False}

    def on_signal(signum, _frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.start()
    except ServerError as e:
        fail(str(e))
    expected = python_instances(repository)
    typer.echo(f"ready: grpc {host}:{grpc_port}  http {host}:{http_port}  metrics {host}:{metrics_port}/metrics")
    if not os.environ.get("TALKSERVE_ADMIN_KEY"):
        typer.echo("admin endpoints (statistics, model config, ...) are closed: set TALKSERVE_ADMIN_KEY to open "
                   "them to requests carrying that key (HTTP header talkserve-admin-key, gRPC metadata "
                   "triton-grpc-protocol-talkserve-admin-key)")
    next_check = time.monotonic() + health_interval
    while not stop["now"] and server.proc.poll() is None:
        time.sleep(0.5)
        if time.monotonic() < next_check:
            continue
        missing = expected - live_stubs(server.proc.pid)
        if missing:
            typer.secho(f"python stub {', '.join(sorted(missing))} died; restarting tritonserver", err=True)
            server.stop()
            try:
                server.start()
            except ServerError as e:
                fail(f"restart failed: {e}")
            typer.echo("ready again")
        next_check = time.monotonic() + health_interval
    if server.proc.poll() is None:
        typer.echo("draining: replies in flight finish, new requests get UNAVAILABLE")
    code = server.shutdown()
    raise typer.Exit(code or 0)


@app.command()
def drain(
    metrics_url: Annotated[str, typer.Option(help="Triton's metrics endpoint")] = "http://127.0.0.1:8002/metrics",
    server_pid: Annotated[int | None, typer.Option(help="tritonserver's pid; default: the one running here")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for replies in flight")] = 30.0,
) -> None:
    """Before stopping tritonserver (a k8s preStop hook): refuse new replies with UNAVAILABLE, fail
    the readiness probe, and wait until the replies in flight have finished (exit 1 on timeout)."""
    from talkserve.drain import drain as run
    from talkserve.health import server_pid as find

    try:
        done = run(server_pid or find(), metrics_url, timeout)
    except (RuntimeError, OSError) as e:
        fail(str(e))
    if not done:
        fail(f"replies still in flight after {timeout:.0f}s")
    typer.echo("drained")


EMOTION_HELP = "neutral, happy, sad, angry or surprised (prompt, voice and portrait)"


@app.command()
def say(
    text: Annotated[str | None, typer.Argument(help="What the user says (or give --audio)")] = None,
    audio: Annotated[Path | None, typer.Option(help="WAV of the user's question (talking_head_voice)")] = None,
    avatar: Annotated[str, typer.Option(help="Registered avatar id")] = "sample",
    output: Annotated[Path, typer.Option("-o", "--output", help="mp4 to write")] = Path("reply.mp4"),
    url: Annotated[str, typer.Option(help="Triton gRPC address")] = "127.0.0.1:8001",
    max_new_tokens: Annotated[int | None, typer.Option(help="Reply length limit")] = None,
    emotion: Annotated[str | None, typer.Option(help=EMOTION_HELP)] = None,
    conversation: Annotated[str | None, typer.Option(
        help="Keep a conversation of this name: its history ($TALKSERVE_HOME/conversations/NAME.json) is sent "
             "and this exchange added")] = None,
) -> None:
    """Ask the served digital human (text, or speech with --audio); write its reply as H.264 + AAC mp4."""
    from talkserve.audio import read_wav
    from talkserve.speak import speak

    if (text is None) == (audio is None):
        fail("give either TEXT or --audio, not both or neither", 2)
    try:
        conv = load_conversation(conversation, avatar)
        result = speak(url, text, avatar, output, max_new_tokens, emotion, read_wav(audio) if audio else None, conv)
        if conv is not None:
            conv.save(conversation_path(conversation))
    except Exception as e:  # a CLI reports the error; it does not print a traceback
        fail(str(e))
    typer.echo(result.summary())


def conversation_path(name: str) -> Path:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise ValueError(f"conversation name {name!r}: use 1-64 letters, digits, '_', '.', '-'")
    return talkserve_home() / "conversations" / f"{name}.json"


def load_conversation(name: str | None, avatar: str):
    from talkserve.conversation import Conversation

    return None if name is None else Conversation.load(None, conversation_path(name), avatar)


@app.command()
def converse(
    audio: Annotated[Path, typer.Argument(help="WAV of the user talking; may hold several turns")],
    avatar: Annotated[str, typer.Option(help="Registered avatar id")] = "sample",
    out_dir: Annotated[Path, typer.Option(help="Where reply-N.mp4 files go")] = Path("replies"),
    url: Annotated[str, typer.Option(help="Triton gRPC address")] = "127.0.0.1:8001",
    emotion: Annotated[str | None, typer.Option(help=EMOTION_HELP)] = None,
    realtime: Annotated[bool, typer.Option(help="Feed the WAV at the speed it was spoken (as a microphone)")] = True,
    conversation: Annotated[str | None, typer.Option(
        help="Continue (and save) the conversation of this name, as `say --conversation` does")] = None,
) -> None:
    """Stream a WAV in real-time chunks: silero-vad splits turns, each turn gets a streamed reply, and
    speech that starts while a reply plays barges in (the old reply is cancelled on the server)."""
    from talkserve.audio import read_wav
    from talkserve.converse import converse as run

    try:
        conv = load_conversation(conversation, avatar)
        replies = run(url, *read_wav(audio), avatar, out_dir, emotion=emotion, realtime=realtime, conversation=conv)
        if conv is not None:
            conv.save(conversation_path(conversation))
    except Exception as e:  # a CLI reports the error; it does not print a traceback
        fail(str(e))
    for r in replies:
        typer.echo(r.summary())


@app.command()
def up(
    repository: Annotated[Path, typer.Option(help="Repository root (holding `current`)")] = DEFAULT_OUTPUT,
    image: Annotated[str, typer.Option(help="Serving image (k8s/images/Dockerfile)")] = IMAGE,
    gpu: Annotated[bool | None, typer.Option(help="Give it the GPUs; default: when nvidia-smi is here")] = None,
    db: Annotated[Path | None, typer.Option(help="Avatar SQLite file")] = None,
) -> None:
    """Run the serving image locally with Docker, the repository and avatars mounted read-only."""
    from talkserve.gpus import node_problems
    from talkserve.up import container_spec, has_gpu
    from talkserve.up import up as start

    problems = node_problems(repository / "current") if (repository / "current").is_dir() else []
    if problems:
        fail("; ".join(problems))
    try:
        spec = container_spec(repository, db_path(db), image, has_gpu() if gpu is None else gpu)
        container = start(spec)
    except (ValueError, RuntimeError) as e:
        fail(str(e))
    typer.echo(f"started {container.name} ({image}): grpc :8001  http :8000  metrics :8002")


@app.command()
def health(
    url: Annotated[str, typer.Option(help="Triton gRPC address")] = "127.0.0.1:8001",
    repository: Annotated[Path, typer.Option(help="The repository the server serves")] = Path("/models/current"),
    server_pid: Annotated[int | None, typer.Option(help="tritonserver's pid; default: the one running here")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds for the whole check")] = 3.0,
    live: Annotated[bool, typer.Option(
        "--live", help="Liveness instead: fail only on what a restart cures (a dead stub, a gone server)")] = False,
) -> None:
    """Readiness probe: server and every model ready, every python stub alive, not draining (exit 1 if
    not). With --live, the liveness probe."""
    from talkserve.health import liveness_problems, problems

    try:
        found = (liveness_problems if live else problems)(url, repository, server_pid, timeout)
    except (RuntimeError, OSError) as e:
        fail(str(e))
    for p in found:
        typer.echo(p, err=True)
    if found:
        raise typer.Exit(1)
    typer.echo("live" if live else "ready")


@avatar_app.command("add")
def avatar_add(
    photo: Annotated[Path, typer.Argument(help="Portrait image with one frontal face")],
    id: Annotated[str, typer.Option("--id", help="Avatar id used by requests")],
    replace: Annotated[bool, typer.Option(help="Overwrite an existing id")] = False,
    db: Annotated[Path | None, typer.Option(help="Avatar SQLite file")] = None,
) -> None:
    """Detect the face once and store the portrait, crop box and id."""
    from talkserve.avatars import AvatarError, AvatarStore

    try:
        avatar = AvatarStore(db_path(db)).add(photo, id, replace=replace)
    except AvatarError as e:
        fail(str(e))
    h, w = avatar.portrait.shape[:2]
    typer.echo(f"avatar {id!r}: {w}x{h}, face box {avatar.box} → {db_path(db)}")


@avatar_app.command("import")
def avatar_import(
    folder: Annotated[Path, typer.Argument(help="Folder of portraits; each file's stem becomes its avatar id")],
    replace: Annotated[bool, typer.Option(help="Overwrite ids that exist")] = False,
    db: Annotated[Path | None, typer.Option(help="Avatar SQLite file")] = None,
) -> None:
    """Register every portrait in a folder in one transaction (the k8s avatars Job): if one has no
    face, none is stored and the store is left as it was."""
    from talkserve.avatars import AvatarError, AvatarStore, portraits_in

    try:
        avatars = AvatarStore(db_path(db)).add_many(portraits_in(folder), replace=replace)
    except AvatarError as e:
        fail(str(e))
    for avatar in avatars:
        h, w = avatar.portrait.shape[:2]
        typer.echo(f"avatar {avatar.id!r}: {w}x{h}, face box {avatar.box}")
    typer.echo(f"{len(avatars)} avatars → {db_path(db)}")


@avatar_app.command("list")
def avatar_list(db: Annotated[Path | None, typer.Option(help="Avatar SQLite file")] = None) -> None:
    from talkserve.avatars import AvatarStore

    for avatar_id, w, h, created in AvatarStore(db_path(db)).list():
        typer.echo(f"{avatar_id}\t{w}x{h}\t{created}")


@app.command()
def demo(
    output: Annotated[Path, typer.Option("-o", "--output", help="mp4 to write")] = Path("demo.mp4"),
    text: Annotated[str, typer.Option(help="What the user says")] = "Hello! Who are you?",
    repository: Annotated[Path, typer.Option(help="Repository root to build into")] = DEFAULT_OUTPUT,
) -> None:
    """Build the starter repository, register the sample portrait, serve, say a sentence, stop."""
    from talkserve.avatars import AvatarStore
    from talkserve.playback import DEGRADED_SENTENCES
    from talkserve.serve import Ports, Server
    from talkserve.speak import speak

    start = time.monotonic()
    # this process's server and client share one admin key (the per-stage compute times are statistics)
    os.environ.setdefault("TALKSERVE_ADMIN_KEY", secrets.token_hex(16))
    recipe = Recipe()
    current = do_build(recipe, repository)
    avatar = AvatarStore(recipe.serving.resolved_avatar_db()).add(SAMPLE_PORTRAIT, "sample", replace=True)
    typer.echo("registered avatar 'sample' (sample portrait)")
    ports = Ports.free()
    log = repository / "tritonserver.log"
    with Server(current, ports, log=log) as server:
        typer.echo(f"tritonserver ready on grpc :{ports.grpc} (log: {log})")
        result = speak(f"127.0.0.1:{ports.grpc}", text, "sample", output)
        degraded = server.metric(DEGRADED_SENTENCES)
    typer.echo(result.summary())
    if degraded:  # lipsync.degrade: where the generator could not keep up, the warp mouth drew the rest
        typer.echo(f"lip-sync: {degraded:.0f} sentence(s) finished by the warp mouth, where Wav2Lip would "
                   f"have fallen behind playback (lipsync.degrade)")
    strip = write_strip(result, avatar, output.with_name(f"{output.stem}-frames.png"))
    typer.echo(f"demo done in {time.monotonic() - start:.1f}s → {output}, {strip}")


def write_strip(result, avatar, path: Path) -> Path:
    """The first sentence's frames as a picture, mouth enlarged (media.frame_strip)."""
    import numpy as np

    from talkserve.lipsync.landmarks import mouth_box
    from talkserve.media import frame_strip

    first = [c.video for c in result.chunks if c.index == result.chunks[0].index]
    return frame_strip(np.concatenate(first), avatar.box, mouth_box(avatar.landmarks, avatar.portrait.shape, 0.3),
                       path)


@app.command("train-llm")
def train_llm(
    out: Annotated[Path, typer.Option(help="Hugging Face directory to write")] = Path("starter_llm"),
    steps: Annotated[int | None, typer.Option(help="Optimizer steps (default: the starter's schedule)")] = None,
) -> None:
    """Train the starter LLM (tiny Llama) on the built-in corpus; reproducible from its seed."""
    from talkserve.models.train_llm import TrainConfig, train

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
    from talkserve.models.train_lipsync import LipsyncTrainConfig, train

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


def main() -> None:  # pragma: no cover
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app(prog_name="talkserve")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
