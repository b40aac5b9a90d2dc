"""`lipsync.kind: warp` served by the real tritonserver: no generator model, the mouth moves, and
nothing outside the mouth region changes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import metric

from talkserve.apps.speak import speak
from talkserve.lipsync.avatars import AvatarStore
from talkserve.lipsync.warp import WarpRig
from talkserve.recipe import SAMPLE_PORTRAIT, Recipe
from talkserve.spec import AdmitParams

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def warp_server(tmp_path_factory):
    from talkserve.server.repository import build
    from talkserve.server.serve import Ports, Server
    from talkserve.targets.cpu import STEPS

    root = tmp_path_factory.mktemp("warp")
    recipe = Recipe(name="warp")
    recipe.llm.model = "starter"  # the calibration serves 1–4 streams: the starter keeps it to a minute
    recipe.lipsync.kind = "warp"
    recipe.serving.avatar_db = root / "avatars.db"
    AvatarStore(recipe.serving.avatar_db).add(SAMPLE_PORTRAIT, "sample")
    current = build(recipe, root / "model_repository", STEPS, progress=lambda s: None)
    srv = Server(current, Ports.free(), log=root / "tritonserver.log").start()
    yield recipe, Path(current), srv
    assert srv.stop() == 0


def test_warp_build_serves_without_a_generator(warp_server):
    _, current, _ = warp_server
    assert (current / "lipsync" / "config.pbtxt").exists()
    assert not (current / "wav2lip").exists()


def test_the_build_measures_its_stream_limit_by_serving_what_it_built(warp_server):
    from talkserve.server import repository as repo
    from talkserve.spec import PARAMS_OF
    from talkserve.targets.calibrate import count_holds

    recipe, current, srv = warp_server
    manifest = json.loads((current / "talkserve_build.json").read_text())
    capacity = manifest["capacity"]  # recipe: max_streams null
    steps, bound = capacity["steps"], recipe.serving.first_chunk_p95_s
    assert capacity["from"] == "served run" and capacity["tried_up_to"] == recipe.serving.calibration_streams
    counts = sorted({s["streams"] for s in steps})
    assert counts == list(range(1, len(counts) + 1)) and steps[0]["ttfc_p95_s"] > 0
    runs = recipe.serving.calibration_runs
    for n in counts:  # each count ran `runs` times; every count but the last held
        mine = [s for s in steps if s["streams"] == n]
        assert [s["try"] for s in mine] == list(range(1, runs + 1))
        assert count_holds(mine, bound) or n == counts[-1]
    last = [s for s in steps if s["streams"] == counts[-1]]
    held = counts[-1] if count_holds(last, bound) else counts[-1] - 1
    assert counts[-1] == recipe.serving.calibration_streams or not count_holds(last, bound)
    assert capacity["max_streams"] == max(1, held)
    # the limit both entry models hold, and what the running server reports
    assert repo.read_params(current / "admit", AdmitParams).max_streams == capacity["max_streams"]
    assert repo.read_params(current / "asr", PARAMS_OF["asr"]).admission.max_streams == capacity["max_streams"]
    assert metric(srv, "talkserve_streams_capacity") == capacity["max_streams"]
    # llm.instances null: a generation loop per admitted stream and a spare
    assert repo.read_config(current / "llm").instance_group[0].count == capacity["max_streams"] + 1
    # the served run left the repository as built: the recipe's avatar store, and nothing added
    # (the manifest lists every file at the end of the build; the stubs' bytecode is gone)
    assert repo.read_params(current / "llm", PARAMS_OF["llm"]).avatar_db == str(recipe.serving.avatar_db.absolute())
    assert not [f for f in manifest["files"] if "__pycache__" in f or "avatars" in f]


def test_warp_reply_moves_only_the_mouth(warp_server, tmp_path):
    recipe, _, srv = warp_server
    result = speak(f"127.0.0.1:{srv.ports.grpc}", "Hello! Who are you?", "sample", tmp_path / "warp.mp4")
    avatar = AvatarStore(recipe.serving.avatar_db).get("sample")
    x1, y1, x2, y2 = WarpRig(avatar.portrait, avatar.landmarks, recipe.lipsync.warp).box
    video = np.concatenate([c.video for c in result.chunks])
    outside = np.ones(avatar.portrait.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert (video[:, outside] == avatar.portrait[outside]).all()
    moved = np.abs(video[:, y1:y2, x1:x2].astype(int) - avatar.portrait[y1:y2, x1:x2]).mean(axis=(1, 2, 3))
    assert (moved > 2).mean() > 0.4 and (moved == 0).any()  # it talks, and closes its mouth in pauses
    assert abs(len(video) - round(sum(len(c.audio) for c in result.chunks) / result.chunks[0].sample_rate * 25)) <= 1


def test_a_build_that_does_not_serve_fails_its_calibration_and_keeps_its_configs(warp_server, tmp_path):
    import shutil

    from talkserve.targets.calibrate import calibrate

    _, current, _ = warp_server
    broken = tmp_path / "repository"
    shutil.copytree(current, broken, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    (broken / "tts" / "1" / "voice.onnx").write_bytes(b"not a voice")
    before = {p: p.read_bytes() for p in broken.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="the built repository does not serve"):
        calibrate(broken, most=2)
    after = {p: p.read_bytes() for p in broken.rglob("*") if p.is_file()}
    assert after == before  # limits and avatar store put back, nothing left behind
