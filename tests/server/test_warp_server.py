"""`lipsync.kind: warp` served by the real tritonserver: no generator model, the mouth moves, and
nothing outside the mouth region changes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from talkserve.avatars import AvatarStore
from talkserve.lipsync.warp import WarpRig
from talkserve.recipe import SAMPLE_PORTRAIT, Recipe
from talkserve.speak import speak
from talkserve.spec import AdmitParams

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def warp_server(tmp_path_factory):
    from talkserve.repository import build
    from talkserve.serve import Ports, Server
    from talkserve.targets.cpu import STEPS

    root = tmp_path_factory.mktemp("warp")
    recipe = Recipe(name="warp")
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


def test_the_build_calibrates_the_stream_limit_from_what_a_second_of_video_costs_here(warp_server):
    from talkserve import repository as repo
    from talkserve.targets.calibrate import HEADROOM, MOST

    _, current, _ = warp_server
    capacity = json.loads((current / "talkserve_build.json").read_text())["capacity"]  # max_streams: null
    cost = capacity["tts_s_per_s"] + capacity["lipsync_s_per_s"]
    assert capacity["cost_s_per_s"] == pytest.approx(cost, abs=2e-4) and capacity["video_seconds"] > 1
    assert capacity["lipsync_s_per_s"] < 0.2  # the warp draws hundreds of frames a second
    assert capacity["max_streams"] == max(1, min(MOST, int(HEADROOM / capacity["cost_s_per_s"])))
    assert repo.read_params(current / "admit", AdmitParams).max_streams == capacity["max_streams"]


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
