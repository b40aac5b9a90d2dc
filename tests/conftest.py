"""Shared fixtures. The `server` fixture builds the real starter repository once per session and
runs the real embedded tritonserver on free loopback ports; nothing about Triton is mocked.

Tests live by what they need: unit/ (no server), server/ (a built repository or a tritonserver),
deploy/ (manifests, rules, pods, router), gpu/ (CUDA; skipped without it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # helpers.py for the tests in every folder

from talkserve.lipsync.avatars import AvatarStore
from talkserve.recipe import SAMPLE_PORTRAIT, Recipe

# Lanes come from where a test lives and what it uses, not from a list kept by hand: a test in
# server/ or deploy/ is that lane, and so is any test that asks for one of these fixtures (it needs
# a built repository or a running tritonserver). `slow` (training, compression builds) is marked
# where the test is.
SERVER_FIXTURES = {"built", "server", "url", "replicas", "prometheus", "cpu_jobs"}
LANES = {"server": pytest.mark.server, "deploy": pytest.mark.deploy, "gpu": pytest.mark.gpu}


def pytest_collection_modifyitems(config, items):
    for item in items:
        folder = Path(item.fspath).parent.name
        if folder in LANES:
            item.add_marker(LANES[folder])
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if not cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """(recipe, repository/current) of the fp32 starter build, with the sample avatar registered."""
    from talkserve.server.repository import build
    from talkserve.targets.cpu import STEPS

    root = tmp_path_factory.mktemp("talkserve")
    recipe = Recipe()
    recipe.llm.model = "starter"  # the suite's replies come from the 1.7 M starter: seconds, not minutes
    recipe.serving.avatar_db = root / "avatars.db"
    # The suite runs several streams at once to test other things; admission has tests of its own.
    recipe.serving.max_streams = 8
    recipe.llm.instances = 2  # not one loop per stream: 9 stubs would slow every server start of the suite
    AvatarStore(recipe.serving.avatar_db).add(SAMPLE_PORTRAIT, "sample")
    current = build(recipe, root / "model_repository", STEPS, progress=lambda s: None)
    return recipe, current


@pytest.fixture(scope="session")
def server(built):
    from talkserve.server.serve import Ports, Server

    _, current = built
    log = Path(current).parent.parent / "tritonserver.log"
    srv = Server(current, Ports.free(), log=log).start()
    yield srv
    alive = srv.proc.poll() is None
    code = srv.stop()
    # A crash mid-session (or an unclean drain) must fail the run, not vanish with the process.
    assert alive and code == 0, f"tritonserver ended badly (exit {code}); see {log}"


@pytest.fixture(scope="session")
def url(server) -> str:
    return f"127.0.0.1:{server.ports.grpc}"
