"""Several streams at once on the real tritonserver: two `lipsync` instances draw their sentences
side by side (the scheduler hands either instance any sentence), each joins the Wav2Lip parts of
the sentences it draws into shared generator calls, and every stream still gets its own reply with
its parts in order — the same reply it gets alone."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import edited_copy, metric

from talkserve.client import TalkClient

QUESTIONS = ["How does this work?", "Tell me a joke.", "Who are you?", "What can you do?"]
INSTANCES = 2


@pytest.fixture(scope="module")
def wav2lip_only(built, tmp_path_factory):
    """The suite's build with two lipsync instances and degradation off, so every part is Wav2Lip's
    (and goes through a batcher)."""
    from talkserve.server.serve import Ports, Server

    _, current = built
    root = edited_copy(current, tmp_path_factory.mktemp("batching"), instances={"lipsync": INSTANCES},
                       lipsync={"degrade": {"enabled": False}})
    srv = Server(root, Ports.free(), log=root.parent / "tritonserver.log").start()
    yield srv
    assert srv.stop() == 0


def reply(url: str, question: str):
    with TalkClient(url) as client:
        return list(client.stream(question, "sample", max_new_tokens=40))


def sentences_by_instance(server) -> list[float]:
    return [metric(server, "talkserve_lipsync_sentences_total", instance=f"lipsync_0_{i}") for i in range(INSTANCES)]


def test_concurrent_streams_share_generator_calls_and_each_gets_its_own_reply_in_order(built, wav2lip_only):
    import onnxruntime as ort

    from talkserve.lipsync import animate, frames_within
    from talkserve.lipsync.avatars import AvatarStore

    recipe, _ = built
    server = wav2lip_only
    url = f"127.0.0.1:{server.ports.grpc}"
    alone = {q: reply(url, q) for q in QUESTIONS}
    calls = metric(server, "talkserve_lipsync_generator_calls_total")
    drawn_before = sentences_by_instance(server)
    together: dict[str, list] = {}
    threads = [threading.Thread(target=lambda q=q: together.__setitem__(q, reply(url, q))) for q in QUESTIONS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    parts = sum(len(chunks) for chunks in together.values())
    assert metric(server, "talkserve_lipsync_generator_calls_total") - calls < parts  # parts were joined
    drawn = [after - before for after, before in zip(sentences_by_instance(server), drawn_before, strict=True)]
    assert sum(drawn) == len({(q, c.index) for q in QUESTIONS for c in together[q]})
    assert min(drawn) > 0, drawn  # both instances drew (each stream's order held above all the same)
    session = ort.InferenceSession(str(Path(server.repository) / "wav2lip" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    avatar = AvatarStore(recipe.serving.avatar_db).get("sample")
    w, most = recipe.wav2lip, recipe.serving.max_part_mb * 1e6
    sizes = [frames_within(n, avatar.portrait.nbytes, most) for n in (w.first_part_frames, w.part_frames)]
    for q in QUESTIONS:
        got = together[q]
        order = [(c.index, c.part) for c in got]
        assert order == sorted(order)  # in order within the stream
        # the same sentences as alone (their lengths vary: the voice samples noise as it speaks)
        assert sorted({(c.index, c.text) for c in got}) == sorted({(c.index, c.text) for c in alone[q]})
        assert all(c.part == 0 or (c.index, c.part - 1) in order for c in got)  # no part missing
        # its own frames: drawn in shared calls, they are what Wav2Lip draws for this sentence's audio
        first = [c for c in got if c.index == 0]
        audio = np.concatenate([c.audio for c in first])
        drawn = animate(audio, first[0].sample_rate, avatar,
                        lambda mel, face: session.run(None, {"mel": mel, "face": face})[0], 25.0, *sizes)
        for c, mine in zip(first, drawn, strict=True):
            assert np.abs(c.video.astype(int) - mine.frames.astype(int)).max() <= 2
