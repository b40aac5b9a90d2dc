"""`talkserve say`, `converse`, `avatar`, `demo`: talking to a server."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Annotated

import typer

from talkserve.cli import DEFAULT_OUTPUT, app, avatar_app, db_path, fail
from talkserve.recipe import SAMPLE_PORTRAIT, Recipe, talkserve_home

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
    video_codec: Annotated[str | None, typer.Option(
        help="How the video travels: raw (RGB frames, the default) or h264 (~150× fewer bytes)")] = None,
) -> None:
    """Ask the served digital human (text, or speech with --audio); write its reply as H.264 + AAC mp4."""
    from talkserve.apps.speak import speak
    from talkserve.voice.audio import read_wav

    if (text is None) == (audio is None):
        fail("give either TEXT or --audio, not both or neither", 2)
    try:
        conv = load_conversation(conversation, avatar)
        result = speak(url, text, avatar, output, max_new_tokens, emotion, read_wav(audio) if audio else None, conv,
                       video_codec)
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
    from talkserve.client.conversation import Conversation

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
    from talkserve.apps.converse import converse as run
    from talkserve.voice.audio import read_wav

    try:
        conv = load_conversation(conversation, avatar)
        replies = run(url, *read_wav(audio), avatar, out_dir, emotion=emotion, realtime=realtime, conversation=conv)
        if conv is not None:
            conv.save(conversation_path(conversation))
    except Exception as e:  # a CLI reports the error; it does not print a traceback
        fail(str(e))
    for r in replies:
        typer.echo(r.summary())



@avatar_app.command("add")
def avatar_add(
    photo: Annotated[Path, typer.Argument(help="Portrait image with one frontal face")],
    id: Annotated[str, typer.Option("--id", help="Avatar id used by requests")],
    replace: Annotated[bool, typer.Option(help="Overwrite an existing id")] = False,
    db: Annotated[Path | None, typer.Option(help="Avatar SQLite file")] = None,
) -> None:
    """Detect the face once and store the portrait, crop box and id."""
    from talkserve.lipsync.avatars import AvatarError, AvatarStore

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
    from talkserve.lipsync.avatars import AvatarError, AvatarStore, portraits_in

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
    from talkserve.lipsync.avatars import AvatarStore

    for avatar_id, w, h, created in AvatarStore(db_path(db)).list():
        typer.echo(f"{avatar_id}\t{w}x{h}\t{created}")


DEMO_STREAMS = 1


@app.command()
def demo(
    output: Annotated[Path, typer.Option("-o", "--output", help="mp4 to write")] = Path("demo.mp4"),
    text: Annotated[str, typer.Option(help="What the user says")] = "Hello! Who are you?",
    repository: Annotated[Path, typer.Option(help="Repository root to build into")] = DEFAULT_OUTPUT,
) -> None:
    """Build the default repository (SmolLM2, Piper, Wav2Lip), register the sample portrait, serve, ask one
    question, write the mp4 and its frame strip, stop."""
    from talkserve.apps.speak import speak
    from talkserve.lipsync.avatars import AvatarStore
    from talkserve.playback import DEGRADED_SENTENCES
    from talkserve.server.serve import Ports, Server

    start = time.monotonic()
    # this process's server and client share one admin key (the per-stage compute times are statistics)
    os.environ.setdefault("TALKSERVE_ADMIN_KEY", secrets.token_hex(16))
    recipe = Recipe()
    # One question needs one stream: measuring this machine's limit (serving 1–4 streams, most of a
    # minute and more with the real LLM) is `talkserve build`'s work, not the demo's.
    recipe.serving.max_streams = DEMO_STREAMS
    from talkserve.cli.build import do_build

    current = do_build(recipe, repository)
    avatar = AvatarStore(recipe.serving.resolved_avatar_db()).add(SAMPLE_PORTRAIT, "sample", replace=True)
    typer.echo("registered avatar 'sample' (sample portrait)")
    typer.echo(f"stream limit {DEMO_STREAMS} (the demo's; `talkserve build` measures this machine's)")
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

    from talkserve.client.media import frame_strip
    from talkserve.lipsync.landmarks import mouth_box

    first = [c.video for c in result.chunks if c.index == result.chunks[0].index]
    return frame_strip(np.concatenate(first), avatar.box, mouth_box(avatar.landmarks, avatar.portrait.shape, 0.3),
                       path)


@app.command()
def web(
    url: Annotated[str, typer.Option(help="Triton gRPC address of a running `talkserve serve`")] = "127.0.0.1:8001",
    avatar: Annotated[str, typer.Option(help="Registered avatar id")] = "sample",
    host: Annotated[str, typer.Option(help="Address the page listens on (loopback by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the page")] = 8080,
) -> None:
    """Show the digital human in a browser: a WebRTC gateway (type, or hold to talk; speak over it to cut in)."""
    from talkserve.apps.web import serve

    typer.echo(f"talkserve web on http://{host}:{port}/ → Triton at {url}, avatar {avatar!r}")
    serve(url, avatar, host, port)
