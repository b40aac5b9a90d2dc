"""Shared fixtures. The `server` fixture builds the real starter repository once per session and
runs the real embedded tritonserver on free loopback ports; nothing about Triton is mocked."""

from __future__ import annotations

from pathlib import Path

import pytest

from talkserve.avatars import AvatarStore
from talkserve.recipe import SAMPLE_PORTRAIT, Recipe

# Lanes come from what a test uses, not from a list kept by hand: a test that asks for one of these
# fixtures needs a built repository or a running tritonserver (the `server` lane); tests of the
# deployment (manifests, rules, pods, router) are the `deploy` lane. `slow` (training, compression
# builds) is marked where the test is.
SERVER_FIXTURES = {"built", "server", "url", "replicas", "prometheus", "cpu_jobs"}
DEPLOY_MODULES = {"test_k8s", "test_monitoring", "test_pod", "test_router"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)
        if item.module.__name__ in DEPLOY_MODULES:
            item.add_marker(pytest.mark.deploy)
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
    from talkserve.repository import build
    from talkserve.targets.cpu import STEPS

    root = tmp_path_factory.mktemp("talkserve")
    recipe = Recipe()
    recipe.serving.avatar_db = root / "avatars.db"
    # The suite runs several streams at once to test other things; admission has tests of its own.
    recipe.serving.max_streams = 8
    AvatarStore(recipe.serving.avatar_db).add(SAMPLE_PORTRAIT, "sample")
    current = build(recipe, root / "model_repository", STEPS, progress=lambda s: None)
    return recipe, current


@pytest.fixture(scope="session")
def server(built):
    from talkserve.serve import Ports, Server

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
