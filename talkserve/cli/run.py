"""`talkserve serve`, `wait`, `drain`, `health`, `up`: running a server and probing it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from talkserve.apps.up import IMAGE
from talkserve.cli import DEFAULT_OUTPUT, app, db_path, fail


@app.command()
def wait(
    output: Annotated[Path, typer.Option(help="Repository root; waits for <output>/current")] = DEFAULT_OUTPUT,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds (exit 1); 0 = never")] = 0,
    interval: Annotated[float, typer.Option(help="Seconds between looks")] = 5.0,
) -> None:
    """Wait until a build has published a repository (serving pods' first initContainer: a pod that
    starts before the build Job finishes waits here instead of crash-looping)."""
    from talkserve.server.repository import is_published

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
    from talkserve.server.health import live_stubs, python_instances
    from talkserve.server.serve import Ports, Server, ServerError

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
    from talkserve.runtime.drain import drain as run
    from talkserve.server.health import server_pid as find

    try:
        done = run(server_pid or find(), metrics_url, timeout)
    except (RuntimeError, OSError) as e:
        fail(str(e))
    if not done:
        fail(f"replies still in flight after {timeout:.0f}s")
    typer.echo("drained")




@app.command()
def up(
    repository: Annotated[Path, typer.Option(help="Repository root (holding `current`)")] = DEFAULT_OUTPUT,
    image: Annotated[str, typer.Option(help="Serving image (k8s/images/Dockerfile)")] = IMAGE,
    gpu: Annotated[bool | None, typer.Option(help="Give it the GPUs; default: when nvidia-smi is here")] = None,
    db: Annotated[Path | None, typer.Option(help="Avatar SQLite file")] = None,
) -> None:
    """Run the serving image locally with Docker, the repository and avatars mounted read-only."""
    from talkserve.apps.up import container_spec, has_gpu
    from talkserve.apps.up import up as start
    from talkserve.server.gpus import node_problems

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
    from talkserve.server.health import liveness_problems, problems

    try:
        found = (liveness_problems if live else problems)(url, repository, server_pid, timeout)
    except (RuntimeError, OSError) as e:
        fail(str(e))
    for p in found:
        typer.echo(p, err=True)
    if found:
        raise typer.Exit(1)
    typer.echo("live" if live else "ready")
