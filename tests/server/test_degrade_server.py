"""Degradation on the real tritonserver: when Wav2Lip would stall a reply, the rest of the sentence is
the warp mouth — exactly the frames the warp draws for that audio — counted in a metric."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import LONG_QUESTION, edited_copy, metric

from talkserve.client import TalkClient
from talkserve.lipsync.avatars import AvatarStore
from talkserve.lipsync.warp import WarpConfig, WarpRig, mouth_shapes


@pytest.fixture(scope="module")
def eager_to_degrade(built, tmp_path_factory):
    """The suite's build with `lipsync.degrade.margin_s` so large that every part Wav2Lip would draw,
    once the reply has started and the generator's pace is known, is predicted to stall."""
    from talkserve.server.serve import Ports, Server

    _, current = built
    root = edited_copy(current, tmp_path_factory.mktemp("degrade"),
                       lipsync={"degrade": {"enabled": True, "margin_s": 1000.0}})
    srv = Server(root, Ports.free(), log=root.parent / "tritonserver.log").start()
    yield srv
    assert srv.stop() == 0


def test_a_reply_about_to_stall_continues_with_the_warp_mouth(built, eager_to_degrade):
    recipe, _ = built
    server = eager_to_degrade
    with TalkClient(f"127.0.0.1:{server.ports.grpc}") as client:
        chunks = list(client.stream(LONG_QUESTION, "sample"))
    sentences = sorted({c.index for c in chunks})
    assert len(sentences) >= 2
    # the first part of the reply is Wav2Lip (nothing measured yet); from its second part on, every
    # sentence switches at its first check
    assert metric(server, "talkserve_lipsync_degraded_sentences_total") == len(sentences)
    avatar = AvatarStore(recipe.serving.avatar_db).get("sample")
    rig = WarpRig(avatar.portrait, avatar.landmarks, WarpConfig())
    for index in sentences:
        parts = [c for c in chunks if c.index == index]
        audio = np.concatenate([c.audio for c in parts])
        frames = np.concatenate([c.video for c in parts])
        warp = rig.animate(mouth_shapes(audio, parts[0].sample_rate, 25.0, len(frames), rig.cfg))
        start = len(parts[0].video) if index == 0 else 0
        assert (frames[start:] == warp[start:]).all()  # degraded frames are the warp's, pixel for pixel
        if index == 0:
            assert not (frames[:start] == warp[:start]).all()  # the first part is Wav2Lip's

