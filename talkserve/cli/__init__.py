"""`talkserve` command line: build, serve, drain, health, say, converse, avatar, demo, up, train-llm."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from talkserve.recipe import Recipe, RecipeError, load_recipe, talkserve_home

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


def main() -> None:  # pragma: no cover
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app(prog_name="talkserve")


# The commands register themselves on `app` (they import the helpers above).
from talkserve.cli import build, run, talk  # noqa: E402, F401
