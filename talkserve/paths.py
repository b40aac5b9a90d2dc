"""Runtime paths, resolved where they are used — never frozen into a built repository.

A repository built on one machine (or in a build Job) is served on others: the avatar store is
found under the serving process's `$TALKSERVE_HOME` unless the recipe named a file explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["avatar_db", "talkserve_home"]


def talkserve_home() -> Path:
    """Where avatars and builds live unless a recipe says otherwise."""
    return Path(os.environ.get("TALKSERVE_HOME", Path.home() / ".local/share/talkserve"))


def avatar_db(configured: str | Path | None = None) -> Path:
    """The avatar SQLite file: the recipe's, else $TALKSERVE_HOME/avatars.db (read now, not at build)."""
    return Path(configured) if configured else talkserve_home() / "avatars.db"
