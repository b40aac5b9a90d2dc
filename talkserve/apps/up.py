"""`talkserve up`: run the serving image locally (Docker SDK) with a built repository mounted.

The same container the k8s Deployment runs: non-root, read-only root filesystem, the repository
and avatar store mounted read-only, /dev/shm sized for the python backend, every GPU when the host
has one (NVIDIA container toolkit), Triton started per its secure-deployment guide.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

IMAGE = "ghcr.io/talkserve/talkserve:0.1.0"  # k8s/images/Dockerfile, as the manifests name it


def triton_args(exit_timeout: int = 45, admin_key: str | None = None) -> list[str]:
    """The serving image's tritonserver flags (talkserve.server.serve holds the secure ones for every server)."""
    from talkserve.server.serve import memory_flags, restricted_flags, secure_flags

    key = admin_key or os.environ.get("TALKSERVE_ADMIN_KEY") or secrets.token_hex(16)
    return ["--model-repository=/models/current", *secure_flags(exit_timeout), *memory_flags(),
            *restricted_flags(key)]


def has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None


def container_spec(repository: Path, avatars: Path, image: str = IMAGE, gpu: bool = False,
                   ports: tuple[int, int, int] = (8000, 8001, 8002)) -> dict:
    """Keyword arguments for docker's `containers.run` (kept pure so it is testable without Docker)."""
    from docker.types import DeviceRequest

    from talkserve.server.serve import SERVING_ENV

    root = Path(repository).absolute()
    if not (root / "current").exists():
        raise ValueError(f"{root} has no built repository (run `talkserve build --output {root}`)")
    return {
        "image": image, "command": triton_args(), "detach": True, "name": "talkserve",
        "user": "10001:10001", "read_only": True, "security_opt": ["no-new-privileges"], "cap_drop": ["ALL"],
        "shm_size": "2g", "tmpfs": {"/tmp": "size=1g"},
        "environment": {"TALKSERVE_HOME": "/var/lib/talkserve", **SERVING_ENV},
        "volumes": {str(root): {"bind": "/models", "mode": "ro"},
                    str(Path(avatars).absolute().parent): {"bind": "/var/lib/talkserve", "mode": "ro"}},
        "ports": {"8000/tcp": ports[0], "8001/tcp": ports[1], "8002/tcp": ports[2]},
        "device_requests": [DeviceRequest(count=-1, capabilities=[["gpu"]])] if gpu else [],
    }


def up(spec: dict):
    """Start the container; a clear error when no Docker engine answers."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env()
        client.ping()
    except DockerException as e:
        raise RuntimeError(f"no Docker engine answers here ({e}); `talkserve serve` runs the embedded server") from e
    return client.containers.run(**spec)
