"""Run the embedded `tritonserver` (from the nvidia-pytriton wheel) on a model repository.

The wheel carries the binary, its shared libraries and one python-backend stub per Python
version; we assemble a backend directory with the stub for *this* interpreter, point the stub at
this environment's packages, and start the server with the secure defaults (model-control none,
strict readiness, bounded exit timeout).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import talkserve
from talkserve.runtime.turns import remove_scratch, remove_stale_scratch

__all__ = ["ADMIN_APIS", "ADMIN_HEADER", "SERVING_ENV", "Ports", "Server", "ServerError", "command", "is_ready",
           "memory_flags", "restricted_flags", "secure_flags", "server_env"]


class ServerError(RuntimeError):
    pass


@dataclass
class Ports:
    grpc: int = 8001
    http: int = 8000
    metrics: int = 8002

    @classmethod
    def free(cls) -> Ports:
        socks = [socket.socket() for _ in range(3)]
        try:
            for s in socks:
                s.bind(("127.0.0.1", 0))
            return cls(*(s.getsockname()[1] for s in socks))
        finally:
            for s in socks:
                s.close()


def pytriton_root() -> Path:
    try:
        import pytriton
    except ImportError as e:
        raise ServerError("nvidia-pytriton is not installed; it carries the embedded tritonserver") from e
    return Path(pytriton.__file__).parent


def backend_dir(cache: Path) -> Path:
    """A backends/ tree whose python backend uses the stub built for this Python version."""
    root = pytriton_root() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"the embedded tritonserver has no python stub for Python {version}")
    py = cache / "backends" / "python"
    py.mkdir(parents=True, exist_ok=True)
    for src in [*(root / "backends" / "python").glob("*.*"), stub]:
        dst = py / src.name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            shutil.copy2(src, dst)
    return py.parent


def server_env() -> dict[str, str]:
    """Environment for the server and its python stubs.

    The stub embeds libpython; when this interpreter is a shared build, the stub loads *its*
    libpython and stdlib (a different patch release's C extensions fail to import), and sees this
    environment's packages and ours on PYTHONPATH.
    """
    libs = [str(pytriton_root().parent / "nvidia_pytriton.libs")]
    env = dict(os.environ)
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        libs.insert(0, sysconfig.get_config_var("LIBDIR"))
        env["PYTHONHOME"] = sys.base_prefix
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [*libs, env.get("LD_LIBRARY_PATH")]))
    paths = [str(Path(talkserve.__file__).parent.parent), sysconfig.get_paths()["purelib"],
             sysconfig.get_paths()["platlib"], env.get("PYTHONPATH")]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
    env["PYTHONUTF8"] = "1"  # the stub may start under the C locale
    for name, value in SERVING_ENV.items():
        env.setdefault(name, value)
    return env


# What tritonserver and its stubs run with, wherever they run (the k8s Deployment sets the same:
# tests/deploy/test_k8s.py).
SERVING_ENV = {
    "OMP_NUM_THREADS": "1",  # python models run side by side; don't oversubscribe
    "TOKENIZERS_PARALLELISM": "false",
    # glibc raises its mmap threshold after each large free (up to 32 MiB), so the frames, audio and
    # tensors of a finished reply (0.1–10 MB each) end up in heaps it keeps; a fixed threshold keeps
    # them mmapped and given back when freed, and two arenas per process stop per-thread heaps
    # (lipsync draws each sentence on a thread) from holding the rest (bench/stalled.py measures it).
    "MALLOC_MMAP_THRESHOLD_": "131072",
    "MALLOC_TRIM_THRESHOLD_": "131072",
    "MALLOC_ARENA_MAX": "2",
}


# Triton's flags, written once: the embedded server, `talkserve up` and the k8s Deployment use these
# (tests/deploy/test_k8s.py holds the manifests to them). Per Triton's secure-deployment guide: no model
# control, readiness only when every model is, configs as built, admin endpoints behind a key.
ADMIN_HEADER = "talkserve-admin-key"
ADMIN_APIS = "model-repository,model-config,shared-memory,statistics,trace,logging"


def secure_flags(exit_timeout: int) -> list[str]:
    return ["--model-control-mode=none", "--strict-readiness=true", "--disable-auto-complete-config",
            f"--exit-timeout-secs={exit_timeout}", "--log-verbose=0", "--allow-metrics=true"]


def memory_flags() -> list[str]:
    """Request/response states Triton's gRPC frontend keeps for reuse (default 8): each keeps the
    buffers of the largest responses it carried (a part of 25 raw 512×512 frames is ~20 MB), and
    they stayed allocated after the streams ended (measured with bench/stalled.py's readers:
    tritonserver +112 MB for good at the default, none at 1). A state allocated per request costs
    nothing next to the frames it carries."""
    return ["--grpc-infer-allocation-pool-size=1"]


def restricted_flags(admin_key: str) -> list[str]:
    """Inference, health and metadata open; everything that inspects or changes the server needs the key."""
    return [f"--grpc-restricted-protocol={ADMIN_APIS}:{ADMIN_HEADER}={admin_key}",
            f"--http-restricted-api={ADMIN_APIS}:{ADMIN_HEADER}={admin_key}"]


def command(repository: Path, ports: Ports, backends: Path, exit_timeout: int = 30,
            extra: list[str] | None = None, host: str = "127.0.0.1", admin_key: str = "") -> list[str]:
    """The embedded server listens on loopback unless `host` says otherwise (e.g. 0.0.0.0)."""
    binary = pytriton_root() / "tritonserver" / "bin" / "tritonserver"
    return [
        str(binary), f"--model-repository={repository}", f"--backend-directory={backends}",
        *secure_flags(exit_timeout), *memory_flags(), *restricted_flags(admin_key or secrets.token_hex(16)),
        f"--grpc-address={host}", f"--http-address={host}", f"--metrics-address={host}",
        f"--grpc-port={ports.grpc}", f"--http-port={ports.http}", f"--metrics-port={ports.metrics}",
        "--allow-cpu-metrics=true", "--allow-gpu-metrics=false", *(extra or []),
    ]


def is_ready(ports: Ports, host: str = "127.0.0.1") -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{ports.http}/v2/health/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@dataclass
class Server:
    """A running tritonserver; use as a context manager or call stop()."""

    repository: Path
    ports: Ports = field(default_factory=Ports)
    log: Path | None = None
    exit_timeout: int = 30
    proc: subprocess.Popen | None = None
    host: str = "127.0.0.1"
    # the admin endpoints' key: $TALKSERVE_ADMIN_KEY, else one made for this run (see admin_key)
    admin_key: str = field(default_factory=lambda: os.environ.get("TALKSERVE_ADMIN_KEY") or secrets.token_hex(16))
    env: dict[str, str | None] = field(default_factory=dict)  # over server_env(); None unsets (benchmarks)

    def start(self, timeout: float = 300.0) -> Server:
        repo = Path(self.repository).resolve()
        if not repo.is_dir():
            raise ServerError(f"model repository {self.repository} does not exist (run `talkserve build`)")
        from talkserve.server.repository import has_engines

        if has_engines(repo):
            raise ServerError(f"{self.repository} holds TensorRT engines (built with --target gpu); the embedded "
                              "tritonserver has only the python backend: serve it with the NGC image "
                              "(`talkserve up`, or k8s/) on a GPU it has plans for")
        cache = Path(os.environ.get("TALKSERVE_CACHE", Path.home() / ".cache" / "talkserve"))
        cmd = command(repo, self.ports, backend_dir(cache), self.exit_timeout, host=self.host,
                      admin_key=self.admin_key)
        remove_stale_scratch()  # left in /dev/shm by servers that were killed
        env = server_env() | self.env
        env = {k: v for k, v in env.items() if v is not None}
        if self.log:
            with open(self.log, "ab") as out:  # the child keeps its own copy of the descriptor
                self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        else:
            self.proc = subprocess.Popen(cmd, env=env)
        deadline = time.monotonic() + timeout
        while not is_ready(self.ports, "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host):
            if self.proc.poll() is not None:
                raise ServerError(f"tritonserver exited with code {self.proc.returncode}"
                                  + (f"; see {self.log}" if self.log else ""))
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"tritonserver not ready after {timeout:.0f}s")
            time.sleep(0.5)
        return self

    def metric(self, name: str) -> float:
        """Sum of a metric's series on this server's Prometheus endpoint (0 when it has none yet)."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports.metrics}/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                   if s.name == name)

    def stop(self, wait: float | None = None) -> int | None:
        """SIGTERM, then SIGKILL after `wait` seconds (default: Triton's exit timeout + 15).

        Triton 2.51 cuts streaming replies on SIGTERM: call `drain` first to let them finish."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.exit_timeout + 15 if wait is None else wait)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        remove_scratch(self.proc.pid)  # its turns and drain flag: nothing of it is left in /dev/shm
        return self.proc.returncode

    def drain(self, timeout: float) -> bool:
        """Refuse new replies and wait up to `timeout` s for those in flight (talkserve.runtime.drain)."""
        from talkserve.runtime.drain import drain

        return drain(self.proc.pid, f"http://127.0.0.1:{self.ports.metrics}/metrics", timeout)

    def shutdown(self) -> int | None:
        """Drain, then stop — all within the exit timeout (plus a few seconds to exit)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.stop()
        start = time.monotonic()
        self.drain(self.exit_timeout)
        return self.stop(wait=max(5.0, self.exit_timeout - (time.monotonic() - start)))

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
