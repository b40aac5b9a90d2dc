"""`talkserve health`: the readiness and liveness probes that also see dead python stubs.

Triton 2.51 keeps answering ready on /v2/health/ready and /v2/models/<m>/ready after a python
model's stub process has died (measured: 16 s after SIGKILL of the tts stub, both still 200), and
it no longer restarts stubs. So besides server and model readiness, every python model instance
that the repository's configs declare must have a live stub process under this tritonserver.
Readiness (may this pod take traffic?) also fails while draining; liveness (should the kubelet
restart it?) fails only for what a restart cures: a dead stub, a server that no longer answers.
Each probe's `timeout` bounds the whole check, not each call, so it fits the kubelet's timeoutSeconds.
"""

from __future__ import annotations

import time
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from talkserve.runtime.drain import is_draining
from talkserve.server.repository import read_configs

STUB = "triton_python_backend_stub"


def python_instances(repository: Path) -> set[str]:
    """Instance names Triton gives python model instances: <model>_<group>_<index>."""
    names = set()
    for cfg in read_configs(repository):
        if cfg.backend != "python":
            continue
        for g, group in enumerate(cfg.instance_group or [mc.ModelInstanceGroup(count=1)]):
            names.update(f"{cfg.name}_{g}_{i}" for i in range(group.count or 1))
    return names


def processes(proc: Path = Path("/proc")):
    """(pid, parent pid, argv) of every process we can see."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):  # the process ended while we looked
            continue
        yield int(entry.name), ppid, [a.decode(errors="replace") for a in argv if a]


def server_pid() -> int:
    """The one tritonserver process visible here (PID 1 in the serving container)."""
    pids = [pid for pid, _, argv in processes() if argv and Path(argv[0]).name == "tritonserver"]
    if len(pids) != 1:
        raise RuntimeError(f"expected one tritonserver process, found {len(pids)}: pass --server-pid")
    return pids[0]


def live_stubs(parent: int) -> set[str]:
    """Instance names of the python stubs running under `parent`."""
    names = set()
    for _, ppid, argv in processes():
        if ppid == parent and argv and Path(argv[0]).name == STUB:
            names.update(a for a in argv if a.count("_") >= 2 and a.rsplit("_", 2)[-1].isdigit())
    return names


def dead_stubs(repository: Path, pid: int) -> list[str]:
    missing = python_instances(repository) - live_stubs(pid)
    return [f"python stub {name} is not running (Triton does not restart it)" for name in sorted(missing)]


def problems(url: str, repository: Path, parent: int | None = None, timeout: float = 3.0) -> list[str]:
    """Why this server should not take traffic; empty when it should."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    deadline = time.monotonic() + timeout
    pid = parent or server_pid()
    if is_draining(pid):  # shutting down: new replies are refused, so take no traffic
        return ["server is draining for shutdown"]
    found = dead_stubs(repository, pid)  # /proc only: no call, and the likeliest fault
    client = grpcclient.InferenceServerClient(url)
    try:
        if not client.is_server_ready(client_timeout=_left(deadline)):
            return [*found, "server is not ready"]
        for cfg in read_configs(repository):
            if not client.is_model_ready(cfg.name, client_timeout=_left(deadline)):
                found.append(f"model {cfg.name} is not ready")
    except InferenceServerException as e:
        return [*found, f"server does not answer within {timeout:g}s: {e.message()}"]
    finally:
        client.close()
    return found


def liveness_problems(url: str, repository: Path, parent: int | None = None, timeout: float = 3.0) -> list[str]:
    """Why this server should be restarted; empty while it lives (draining included: it is finishing)."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    pid = parent or server_pid()
    found = dead_stubs(repository, pid)
    client = grpcclient.InferenceServerClient(url)
    try:
        if not client.is_server_live(client_timeout=timeout):
            found.append("server is not live")
    except InferenceServerException as e:
        found.append(f"server does not answer within {timeout:g}s: {e.message()}")
    finally:
        client.close()
    return found


def _left(deadline: float) -> float:
    return max(0.05, deadline - time.monotonic())
