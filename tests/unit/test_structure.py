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
    assert "4 kept, 0 broken" in run.stdout


def test_no_module_grows_past_350_lines():
    """A module that long does several jobs; split it (the spec, the tasks, the targets, the cli were)."""
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "talkserve").rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 350}
    assert not long, long


def test_a_python_model_reads_its_parameters_only_through_its_spec_class():
    """No loose string parameters: the stubs parse `talkserve.spec` Params, never `parameters[...]`."""
    for path in (ROOT / "talkserve" / "serving" / "models").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "ModelArgs(args, " in text, path.name
        assert "string_value" not in text and 'params["' not in text and "params.get(" not in text, path.name


def test_a_contract_that_the_code_breaks_is_reported(tmp_path):
    config = tmp_path / "broken.ini"  # the client does import talkserve.text (the draining message)
    config.write_text("[importlinter]\nroot_package = talkserve\n\n[importlinter:contract:1]\n"
                      "name = broken on purpose\ntype = forbidden\nsource_modules = talkserve.client\n"
                      "forbidden_modules = talkserve.text\n")
    run = lint_imports("--config", str(config))
    assert run.returncode == 1 and "BROKEN" in run.stdout



def test_every_public_name_resolves():
    """Each subpackage's and module's `__all__` is its chosen API: every name there exists."""
    import importlib

    for name in ("talkserve.compress", "talkserve.models", "talkserve.targets", "talkserve.lipsync",
                 "talkserve.spec", "talkserve.client", "talkserve.client.talk", "talkserve.export",
                 "talkserve.server.serve", "talkserve.server.repository", "talkserve.server.gpus", "talkserve.paths",
                 "talkserve.compress.tasks"):
        module = importlib.import_module(name)
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert not missing, (name, missing)
