"""The served pipeline end to end from a `pruned30-int8` build (LLM and Wav2Lip pruned, distilled and
INT8; the Piper voice INT8 where Whisper still understands it), against the real tritonserver."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from talkserve.apps.speak import speak
from talkserve.compress.data import builtin_texts
from talkserve.compress.presets import preset
from talkserve.lipsync.avatars import AvatarStore
from talkserve.recipe import SAMPLE_PORTRAIT, Recipe

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    from talkserve.server.repository import build
    from talkserve.targets.cpu import STEPS

    root = tmp_path_factory.mktemp("pruned30")
    recipe = Recipe(name="pruned30-int8", compress=preset("pruned30-int8"))
    recipe.llm.model = "starter"  # compressing SmolLM2 takes tens of minutes on 2 cores: the benchmark's
    # The preset as shipped, with CI-sized data and repair (the benchmark runs the full schedule).
    recipe.compress.held_out, recipe.compress.max_examples = 3, 12
    recipe.compress.llm.distill.steps = 40  # ~0.1 s a step for the starter LLM
    recipe.compress.wav2lip.distill.steps = 8  # ~1 s a step at the published size
    # 8 repair steps cannot bring a 30 %-pruned *trained* Wav2Lip back within its gates (measured:
    # mouth PSNR 16.4 dB, sync r 0.24 vs the teacher's 0.88); CI publishes it anyway, recorded as an
    # accepted failure, to test the served pipeline. The preset's full schedule is the benchmark's.
    recipe.compress.accept_failed_gates = True
    recipe.serving.avatar_db = root / "avatars.db"
    AvatarStore(recipe.serving.avatar_db).add(SAMPLE_PORTRAIT, "sample")
    current = build(recipe, root / "model_repository", STEPS, progress=lambda s: None)
    return current


@pytest.fixture(scope="module")
def compressed_url(compressed):
    from talkserve.server.serve import Ports, Server

    log = Path(compressed).parent.parent / "tritonserver.log"
    srv = Server(compressed, Ports.free(), log=log).start()
    yield f"127.0.0.1:{srv.ports.grpc}"
    assert srv.stop() == 0, f"tritonserver ended badly; see {log}"


def test_release_carries_compressed_models_and_their_report(compressed):
    root = Path(compressed)
    manifest = json.loads((root / "talkserve_build.json").read_text())
    assert set(manifest["compression"]) == {"llm", "wav2lip", "piper"}
    for name, entry in manifest["compression"].items():
        if name == "wav2lip":  # published despite its gates, and the build says so
            failed = {g["metric"] for g in entry["gates"] if not g["passed"]}
            assert failed and all(any(f"{m} = " in a and "FAILS" in a for a in entry["accepted_failures"])
                                  for m in failed), entry
            continue
        assert entry["gates"] and all(g["passed"] for g in entry["gates"]), name
    for path in ("wav2lip/1/model.onnx", "llm_decoder/1/model.onnx", "tts/1/voice.onnx"):
        ops = {n.op_type for n in onnx.load(str(root / path), load_external_data=False).graph.node}
        assert ops & {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger"}, path
    for path in ("wav2lip/1/model.qdq_s8.onnx", "llm_decoder/1/model.qdq_s8.onnx"):
        assert (root / path).is_file()
    cfg = json.loads((root / "llm/1/compressed_model/config.json").read_text())
    assert cfg["num_attention_heads"] == 4 and cfg["intermediate_size"] < 512  # heads and FFN pruned
    report = (root / "compression_report.md").read_text()
    assert "## wav2lip" in report and "## llm" in report
    assert (root / "compression_report.png").stat().st_size > 1000


def test_compressed_pipeline_streams_a_reply(compressed_url, tmp_path):
    result = speak(compressed_url, "Hello! Who are you?", "sample", tmp_path / "reply.mp4")
    chunks = result.chunks
    assert len(chunks) >= 2
    # The student passed its held-out gates; on this prompt it may pick another of its corpus sentences,
    # but what it says is one of them, word for word (not degenerate text).
    assert chunks[0].text in builtin_texts(), chunks[0].text
    audio = np.concatenate([c.audio for c in chunks])
    assert np.abs(audio).max() > 0.05  # speech, not silence
    assert sum(len(c.video) for c in chunks) >= 25
