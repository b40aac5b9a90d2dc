"""The GPUs of this node and whether a repository's TensorRT plans fit them.

Read by `talkserve engines --check` (the pod's init and health), `talkserve up` and the GPU target;
it imports nothing of the build, so the serving side can ask without loading it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from talkserve.server.repository import engine_configs, has_engines

__all__ = ["Gpu", "check_plans", "node_problems", "nvidia_gpus", "plan_name", "plans_in"]

PLAN = re.compile(r"model_sm(\d)(\d+)\.plan")


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str  # "8.6"


def nvidia_gpus() -> list[Gpu]:
    """GPUs the NVIDIA driver reports here; empty without a driver or a GPU."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    run = subprocess.run([exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30)
    if run.returncode != 0:
        return []
    return [Gpu(*(part.strip() for part in line.rsplit(",", 1))) for line in run.stdout.splitlines() if "," in line]


def plan_name(compute_capability: str) -> str:
    return f"model_sm{compute_capability.replace('.', '')}.plan"


def plans_in(version_dir: Path) -> dict[str, str]:
    """{compute capability: plan file} of the engines already built for one model."""
    found = {}
    for f in sorted(Path(version_dir).glob("model_sm*.plan")):
        m = PLAN.fullmatch(f.name)
        if m:
            found[f"{m[1]}.{m[2]}"] = f.name
    return found


def check_plans(repository: Path, compute_capability: str) -> list[str]:
    """Why this GPU cannot serve `repository` (empty when every engine has a plan for it)."""
    problems = []
    for cfg in engine_configs(repository):
        if compute_capability not in cfg.cc_model_filenames:
            have = ", ".join(sorted(cfg.cc_model_filenames)) or "none"
            problems.append(f"{cfg.name} has TensorRT plans for compute capability {have}, not {compute_capability}")
        elif not (Path(repository) / cfg.name / "1" / cfg.cc_model_filenames[compute_capability]).is_file():
            problems.append(f"{cfg.name}: {cfg.cc_model_filenames[compute_capability]} is missing")
    return problems


def node_problems(repository: Path, gpus: list[Gpu] | None = None, require_engines: bool = False) -> list[str]:
    """Why this node cannot serve `repository`'s engines (empty for a CPU repository, unless
    `require_engines`: a GPU pool's pod must not pass its check on a repository without any)."""
    if require_engines and not (repository / "talkserve_build.json").is_file():
        return [f"no published repository at {repository} (the build Job has not finished)"]
    if not has_engines(repository):
        return (["the repository holds no TensorRT engines (built for the CPU target): run `talkserve engines` "
                 "on a node of this GPU"] if require_engines else [])
    gpus = nvidia_gpus() if gpus is None else gpus
    if not gpus:
        return ["the repository holds TensorRT engines but this node has no NVIDIA GPU"]
    problems = [p for g in {g.compute_capability: g for g in gpus}.values()
                for p in check_plans(repository, g.compute_capability)]
    if problems:
        problems.append("build them on a node of this GPU: `talkserve engines` (adds them to the repository)")
    return problems
