"""The served pipeline, end to end, against the real embedded tritonserver."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from helpers import metric

from talkserve.apps.speak import concat_audio, speak
from talkserve.client import TalkClient, TalkError, stream_error_status
from talkserve.client.media import probe
from talkserve.lipsync.avatars import AvatarStore

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def reply(url, tmp_path_factory):
    """One spoken reply, written to mp4 through the client library."""
    out = tmp_path_factory.mktemp("say") / "reply.mp4"
    return speak(url, "Hello! Who are you?", "sample", out)


def test_reply_streams_in_order_in_several_chunks(reply):
    chunks = reply.chunks
    assert len(chunks) >= 2
    order = [(c.index, c.part) for c in chunks]
    assert order == sorted(order) and len(set(order)) == len(order)
    for i in {c.index for c in chunks}:  # every sentence's parts are 0..n-1, none lost
        parts = [c.part for c in chunks if c.index == i]
        assert parts == list(range(len(parts)))
    assert sorted({c.index for c in chunks}) == list(range(max(c.index for c in chunks) + 1))
    assert chunks[0].text == "Hello, it is nice to meet you."  # greedy decoding is deterministic
    seconds = [c.seconds for c in chunks]
    assert seconds == sorted(seconds)
    # The first part is on screen long before the reply is complete.
    assert chunks[0].seconds < 0.5 * chunks[-1].seconds


def test_first_chunk_arrives_while_the_llm_is_still_generating(server, url):
    tokens_before = metric(server, "talkserve_llm_tokens_total")
    with TalkClient(url) as client:
        stream = client.stream("Tell me a long story.", "sample", max_new_tokens=256)
        first = next(stream)
        generating = metric(server, "talkserve_llm_generations_active")  # read the moment chunk 0 lands
        rest = list(stream)
    assert generating >= 1, "the LLM had already finished when the first chunk arrived"
    assert first.index == 0 and first.text.startswith("Once upon a time")
    assert len({c.index for c in rest}) >= 5  # the long reply really streamed sentence by sentence
    assert metric(server, "talkserve_llm_generations_active") == 0
    assert metric(server, "talkserve_llm_tokens_total") - tokens_before > 100
    assert metric(server, "talkserve_llm_time_to_first_token_seconds_count") >= 1


def test_stage_metrics_are_exported_with_values(server, url, reply):
    frames = sum(len(c.video) for c in reply.chunks)
    assert metric(server, "talkserve_lipsync_frames_total") >= frames
    assert metric(server, "talkserve_chunks_streamed_total") >= len(reply.chunks)
    assert metric(server, "talkserve_time_to_first_chunk_seconds_count") >= 1
    # this request's own first-chunk time, as the server observed it (the session's server also
    # ran the multi-stream soak, whose queued first chunks weigh on the running average)
    count, total = (metric(server, f"talkserve_time_to_first_chunk_seconds_{k}") for k in ("count", "sum"))
    with TalkClient(url) as client:
        first, *_ = client.stream("Tell me a joke.", "sample")  # the whole reply, so the server ends idle
    seen = first.seconds
    observed = metric(server, "talkserve_time_to_first_chunk_seconds_sum") - total
    assert metric(server, "talkserve_time_to_first_chunk_seconds_count") == count + 1
    assert 0 < observed <= seen + 0.5
    assert metric(server, "talkserve_tts_audio_seconds_total") >= len(concat_audio(reply.chunks)) / 22050 - 1
    assert metric(server, "talkserve_tts_real_time_factor_count") >= 3
    assert metric(server, "talkserve_lipsync_frames_per_second_count") >= len(reply.chunks)


def test_each_chunk_carries_exactly_its_frames_audio(reply):
    for c in reply.chunks:
        assert c.sample_rate == 22050
        assert c.audio.dtype == np.float32 and c.video.dtype == np.uint8
        assert c.video.shape[1:] == (512, 512, 3)
        assert abs(len(c.audio) - len(c.video) * c.sample_rate / 25) < c.sample_rate / 25


def test_mp4_decodes_with_matching_video_and_audio(reply):
    info = probe(reply.path)
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert info["fps"] == 25 and (info["width"], info["height"]) == (512, 512)
    audio_seconds = len(concat_audio(reply.chunks)) / 22050
    assert abs(info["frames"] - round(audio_seconds * 25)) <= 1
    assert info["frames"] == sum(len(c.video) for c in reply.chunks)
    # AAC codes whole 1024-sample frames: the decoded track may be up to one frame longer.
    assert 0 <= info["audio_seconds"] - audio_seconds < 1024 / 22050 + 1e-6


def test_only_the_lower_face_changes_and_it_moves(reply, built):
    from talkserve.lipsync import paste_mask
    from talkserve.lipsync.warp import WarpRig

    recipe, _ = built
    avatar = AvatarStore(recipe.serving.avatar_db).get("sample")
    x1, y1, x2, y2 = avatar.box
    outside = np.ones(avatar.portrait.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    outside[y1:y2, x1:x2] = paste_mask(avatar)[..., 0] == 0  # eyes, forehead, the box's edges
    # On a loaded CPU a part Wav2Lip would draw too late is the warp's (degradation): its lower face
    wx1, wy1, wx2, wy2 = WarpRig(avatar.portrait, avatar.landmarks, recipe.lipsync.warp).box
    outside[wy1:wy2, wx1:wx2] = False
    video = np.concatenate([c.video for c in reply.chunks])
    assert (video[:, outside] == avatar.portrait[outside]).all()
    lower = video[:, y1:y2, x1:x2][:, ~outside[y1:y2, x1:x2]].astype(np.float32)
    assert lower.std(axis=0).mean() > 2.0  # the mouth region changes from frame to frame: it talks


def raw_stream(url: str, inputs: list[grpcclient.InferInput]) -> tuple[str, str]:
    """Send one request on a fresh stream; return (status, message) of the error it gets."""
    import queue

    client = grpcclient.InferenceServerClient(url)
    results: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        client.async_stream_infer("talking_head", inputs, enable_empty_final_response=True)
        while True:
            result, error = results.get(timeout=60)
            if error is not None:
                return stream_error_status(error), error.message()
            if result.get_response().parameters["triton_final_response"].bool_param:
                return "OK", ""
    finally:
        client.stop_stream()
        client.close()


def bytes_input(name: str, values: list[bytes]) -> grpcclient.InferInput:
    t = grpcclient.InferInput(name, [len(values)], "BYTES")
    t.set_data_from_numpy(np.array(values, dtype=np.object_))
    return t


def int_input(name: str, values: list[int]) -> grpcclient.InferInput:
    t = grpcclient.InferInput(name, [len(values)], "INT32")
    t.set_data_from_numpy(np.array(values, np.int32))
    return t


BAD_REQUESTS = {
    "empty text": ([bytes_input("text", [b""]), bytes_input("avatar_id", [b"sample"])], "text: is empty"),
    "text over the limit": ([bytes_input("text", [b"a" * 1001]), bytes_input("avatar_id", [b"sample"])],
                            "text: is 1001 characters, the limit is 1000"),
    "unknown avatar": ([bytes_input("text", [b"Hi."]), bytes_input("avatar_id", [b"ghost"])],
                       "avatar_id: 'ghost' is not registered"),
    "non-UTF-8 text": ([bytes_input("text", [b"\xc3\x28"]), bytes_input("avatar_id", [b"sample"])],
                       "text: not valid UTF-8"),
    "wrong dtype": ([int_input("text", [7]), bytes_input("avatar_id", [b"sample"])], "'text'"),
    "wrong shape": ([bytes_input("text", [b"a", b"b"]), bytes_input("avatar_id", [b"sample"])], "'text'"),
    "missing input": ([bytes_input("text", [b"Hi."])], "avatar_id"),
    "max_new_tokens out of range": ([bytes_input("text", [b"Hi."]), bytes_input("avatar_id", [b"sample"]),
                                     int_input("max_new_tokens", [0])], "max_new_tokens: 0 is outside 1..256"),
    "unknown video codec": ([bytes_input("text", [b"Hi."]), bytes_input("avatar_id", [b"sample"]),
                             bytes_input("video_codec", [b"vp9"])], "video_codec: 'vp9' is not one of raw, h264"),
    "history not JSON": ([bytes_input("text", [b"Why?"]), bytes_input("avatar_id", [b"sample"]),
                          bytes_input("history", [b"[{role: user}"])], "history: not JSON"),
    "history with a wrong role": (
        [bytes_input("text", [b"Why?"]), bytes_input("avatar_id", [b"sample"]),
         bytes_input("history", [b'[{"role": "system", "content": "hi"}, {"role": "assistant", "content": "x"}]'])],
        "history: turn 0 has role 'system'"),
    "history too long": (
        [bytes_input("text", [b"Why?"]), bytes_input("avatar_id", [b"sample"]),
         bytes_input("history", [("[" + ",".join(['{"role": "user", "content": "Tell me a long story."}, '
                                                  '{"role": "assistant", "content": "' + "Once upon a time. " * 50
                                                  + '"}'] * 3) + "]").encode()])],
        "history: the prompt is"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_is_invalid_argument_naming_the_field(url, case):
    inputs, expected = BAD_REQUESTS[case]
    status, message = raw_stream(url, inputs)
    assert status == "INVALID_ARGUMENT", message
    assert expected in message
    with TalkClient(url) as client:
        assert client.is_ready()


def test_a_good_request_ends_with_the_final_flag(url):
    inputs = [bytes_input("text", [b"Thanks."]), bytes_input("avatar_id", [b"sample"]),
              int_input("max_new_tokens", [4])]
    assert raw_stream(url, inputs) == ("OK", "")


def test_client_raises_talk_error_with_status(server, url):
    rejected = metric(server, "talkserve_requests_rejected_total", field="avatar_id")
    with TalkClient(url) as client, pytest.raises(TalkError) as e:
        list(client.stream("Hello!", "ghost"))
    assert e.value.status == "INVALID_ARGUMENT"
    assert metric(server, "talkserve_requests_rejected_total", field="avatar_id") == rejected + 1


def test_max_new_tokens_bounds_the_reply(url):
    with TalkClient(url) as client:
        chunks = list(client.stream("What is pruning?", "sample", max_new_tokens=6))
    assert {c.index for c in chunks} == {0}
    assert len(chunks[0].text.split()) <= 6


def test_cli_say_writes_mp4(server, url, tmp_path):
    out = tmp_path / "cli.mp4"
    keyed = {**os.environ, "TALKSERVE_ADMIN_KEY": server.admin_key}  # the per-stage times are admin statistics
    run = subprocess.run([sys.executable, "-m", "talkserve.cli", "say", "Tell me a joke.", "--avatar", "sample",
                          "-o", str(out), "--url", url], capture_output=True, text=True, timeout=300, env=keyed)
    assert run.returncode == 0, run.stderr
    assert "time to first chunk" in run.stdout and "server compute per stage" in run.stdout
    unkeyed = {k: v for k, v in os.environ.items() if k != "TALKSERVE_ADMIN_KEY"}
    run = subprocess.run([sys.executable, "-m", "talkserve.cli", "say", "Thanks.", "--avatar", "sample",
                          "-o", str(tmp_path / "closed.mp4"), "--url", url], capture_output=True, text=True,
                         timeout=300, env=unkeyed)
    assert run.returncode == 0 and "server compute per stage" not in run.stdout  # closed without the key
    (tmp_path / "closed.mp4").unlink()
    assert probe(out)["frames"] > 25
    bad = subprocess.run([sys.executable, "-m", "talkserve.cli", "say", "Hi.", "--avatar", "ghost",
                          "-o", str(tmp_path / "no.mp4"), "--url", url], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "ghost" in bad.stderr
    assert list(tmp_path.iterdir()) == [out]  # the failed reply left no file, partial or not


def test_a_conversation_follows_up_on_its_history_and_its_turns_hit_the_prefix_cache(server, url, built):
    """Three turns over the real server with the build's `llm` instances (more than one, so the
    turns land on different stub processes): each follow-up reuses the earlier turns' KV."""
    from talkserve.models.corpus import FOLLOW_UPS
    from talkserve.server import repository as repo

    assert repo.read_config(built[1] / "llm").instance_group[0].count > 1

    def counts():
        return (metric(server, "talkserve_llm_prefix_cache_lookups_total", result="hit"),
                metric(server, "talkserve_llm_prefix_cache_lookups_total", result="miss"),
                metric(server, "talkserve_llm_prefix_cache_reused_tokens_total"))

    replies, per_turn = [], []
    with TalkClient(url) as client:
        conv = client.conversation("sample")
        for question in ["What is pruning?", "Tell me more.", "Why?"]:
            before = counts()
            replies.append([c.text for c in conv.say(question) if c.part == 0])
            per_turn.append([a - b for a, b in zip(counts(), before, strict=True)])
    more = next(m for q, m, _ in FOLLOW_UPS if q == "What is pruning?")
    assert replies[1][0] == more.split(". ")[0] + "."  # the server saw the first turn
    assert conv.history[0] == {"role": "user", "content": "What is pruning?"}
    assert conv.history[1]["content"] == " ".join(replies[0]) and len(conv.history) == 6
    assert all(hit + miss == 1 for hit, miss, _ in per_turn)  # one lookup per request
    for hit, _, reused in per_turn[1:]:  # every follow-up hit, reusing more than the first question's prompt
        assert hit == 1 and reused > 10, per_turn


def test_cli_say_keeps_a_named_conversation(url, tmp_path):
    import json
    import os

    env = {**os.environ, "TALKSERVE_HOME": str(tmp_path)}

    def say(text: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "talkserve.cli", "say", text, "--avatar", "sample", "-o",
                               str(tmp_path / "r.mp4"), "--url", url, "--conversation", "demo-1"],
                              capture_output=True, text=True, timeout=300, env=env)

    assert say("Tell me a joke.").returncode == 0
    second = say("Why?")
    assert second.returncode == 0, second.stderr
    saved = json.loads((tmp_path / "conversations" / "demo-1.json").read_text())
    assert [t["role"] for t in saved["history"]] == ["user", "assistant"] * 2
    assert saved["history"][2]["content"] == "Why?"
    assert "two kinds of bugs" in saved["history"][3]["content"]  # the why of the joke, from turn one


def test_the_embedded_server_listens_on_loopback_with_admin_endpoints_closed(server):
    import urllib.error
    import urllib.request

    def listening(port: int) -> set[str]:
        found = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hexport = local.rsplit(":", 1)
                if int(hexport, 16) == port and state == "0A":  # LISTEN
                    found.add(address)
        return found

    loopback = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1, as IPv4 or IPv4-mapped IPv6
    for port in (server.ports.grpc, server.ports.http, server.ports.metrics):
        assert listening(port) and listening(port) <= loopback, port  # not 0.0.0.0
    stats = f"http://127.0.0.1:{server.ports.http}/v2/models/stats"
    with pytest.raises(urllib.error.HTTPError):  # restricted as in the pod
        urllib.request.urlopen(stats, timeout=10)
    keyed = urllib.request.Request(stats, headers={"talkserve-admin-key": server.admin_key})
    with urllib.request.urlopen(keyed, timeout=10) as r:
        assert b"model_stats" in r.read()


def test_h264_parts_carry_exactly_their_audio_s_frames_in_far_fewer_bytes(server, url, tmp_path):
    from talkserve.apps.speak import speak

    before = metric(server, "talkserve_lipsync_h264_bytes_total")
    with TalkClient(url) as client:
        forwarded = list(client.stream("Tell me a joke.", "sample", video_codec="h264", decode_video=False))
        raw = list(client.stream("Tell me a joke.", "sample"))
    assert forwarded and all(c.h264 and len(c.video) == 0 for c in forwarded)  # bytes to forward, nothing decoded
    coded = sum(len(c.h264) for c in forwarded)
    assert metric(server, "talkserve_lipsync_h264_bytes_total") - before == coded
    assert sum(c.video.nbytes for c in raw) / coded >= 30  # the same reply's raw frames
    result = speak(url, "Tell me a joke.", "sample", tmp_path / "h264.mp4", video_codec="h264")
    for c in result.chunks:  # decoded by the client: each part's frames span exactly its audio
        assert abs(len(c.video) - round(len(c.audio) / c.sample_rate * 25)) <= 1 and c.video.shape[1:] == (512, 512, 3)
    frames = probe(result.path)["frames"]
    assert abs(frames - round(result.audio_seconds * 25)) <= 1
