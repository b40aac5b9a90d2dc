"""Imports that must not happen, checked by import-linter (contracts in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lint_imports(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert binary, "import-linter is missing (pip install -e '.[dev]')"
    return subprocess.run([binary, "--no-cache", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold():
    run = lint_imports()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "2 kept, 0 broken" in run.stdout


def test_a_contract_that_the_code_breaks_is_reported(tmp_path):
    config = tmp_path / "broken.ini"  # the client does import talkserve.text (the draining message)
    config.write_text("[importlinter]\nroot_package = talkserve\n\n[importlinter:contract:1]\n"
                      "name = broken on purpose\ntype = forbidden\nsource_modules = talkserve.client\n"
                      "forbidden_modules = talkserve.text\n")
    run = lint_imports("--config", str(config))
    assert run.returncode == 1 and "BROKEN" in run.stdout

