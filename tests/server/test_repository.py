"""Recipe handling and atomic publishing of the repository (no server needed)."""

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from talkserve import spec
from talkserve.recipe import Recipe, RecipeError, load_recipe
from talkserve.server import repository as repo
from talkserve.server.repository import build
from talkserve.spec import AdmitParams

RECIPES = Path(__file__).resolve().parents[2] / "build" / "recipes"


def test_fp32_recipe_file_is_the_preset():
    assert load_recipe(RECIPES / "fp32.yaml") == Recipe()


def test_unknown_keys_are_rejected_with_their_name(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("name: x\nwav2lip:\n  chekpoint: a.pth\n")
    with pytest.raises(RecipeError, match="chekpoint"):
        load_recipe(bad)


def test_relative_paths_are_relative_to_the_recipe(tmp_path):
    load = load_recipe(RECIPES / "wav2lip-gan.yaml")
    assert load.wav2lip.checkpoint == (RECIPES / "../../checkpoints/wav2lip_gan.pth").resolve()


def write_marker(root: Path, recipe: Recipe, ctx) -> None:
    (root / "m").mkdir()
    (root / "m" / "config.pbtxt").write_text(f'name: "{recipe.name}"\n')


def test_failed_build_leaves_the_previous_repository_untouched(tmp_path):
    out = tmp_path / "repo"
    first = build(Recipe(name="first"), out, [("write", write_marker)], progress=lambda s: None)
    before = first.resolve()

    def explode(root, recipe, ctx):
        write_marker(root, recipe, ctx)
        raise RuntimeError("export failed half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        build(Recipe(name="second"), out, [("write", explode)], progress=lambda s: None)
    assert (out / "current").resolve() == before
    assert (out / "current" / "m" / "config.pbtxt").read_text() == 'name: "first"\n'
    assert [p.name for p in (out / "releases").iterdir()] == [before.name]  # no partial left


def test_two_builds_in_the_same_second_both_publish(tmp_path):
    out = tmp_path / "repo"
    first = build(Recipe(name="same"), out, [("write", write_marker)], progress=lambda s: None).resolve()
    second = build(Recipe(name="same"), out, [("write", write_marker)], progress=lambda s: None).resolve()
    assert first != second and (out / "current").resolve() == second


def test_killed_build_leftovers_are_never_served_and_are_cleaned(tmp_path):
    out = tmp_path / "repo"
    build(Recipe(name="a"), out, [("write", write_marker)], progress=lambda s: None)
    stale = out / "releases" / "b-killed.partial"
    stale.mkdir()
    current = build(Recipe(name="c"), out, [("write", write_marker)], progress=lambda s: None)
    assert not stale.exists()
    assert (current / "talkserve_recipe.yaml").read_text().startswith("name: c\n")


def test_starter_repository_configs(built):
    _recipe, current = built
    configs = {}
    for path in current.glob("*/config.pbtxt"):
        configs[path.parent.name] = text_format.Parse(path.read_text(), mc.ModelConfig())
    assert set(configs) == {"talking_head", "talking_head_voice", "admit", "asr", "cancel", "ack", "llm",
                            "llm_decoder", "tts", "lipsync", "wav2lip"}
    head = configs["talking_head"]
    assert head.platform == "ensemble" and head.model_transaction_policy.decoupled
    assert [s.model_name for s in head.ensemble_scheduling.step] == ["admit", "llm", "tts", "lipsync"]
    assert [i.name for i in head.input] == ["text", "avatar_id", "max_new_tokens", "emotion", "conversation_id",
                                            "history", "receipts", "video_codec"]
    assert all(i.optional for i in head.input[2:])
    assert [o.name for o in head.output] == ["reply_text", "chunk_index", "part_index", "audio", "sample_rate", "video",
                                             "video_h264"]
    voice = configs["talking_head_voice"]
    assert [s.model_name for s in voice.ensemble_scheduling.step] == ["asr", "llm", "tts", "lipsync"]
    assert [i.name for i in voice.input][:3] == ["user_audio", "user_sample_rate", "avatar_id"]
    assert [o.name for o in voice.output][-1] == "user_text"
    assert configs["llm"].model_transaction_policy.decoupled
    assert configs["llm_decoder"].input[0].name == "input_ids"  # named tensors, no "input.1"
    assert (current / "talkserve_recipe.yaml").is_file() and (current / "talkserve_build.json").is_file()
    import json

    manifest = json.loads((current / "talkserve_build.json").read_text())
    assert manifest["recipe"]["name"] == "fp32"
    assert "onnxruntime" in manifest["versions"]
    assert "wav2lip/1/model.onnx" in manifest["files"]
    assert max(manifest["reports"]["wav2lip"]["max_abs_diff"].values()) < 1e-4
    assert manifest["capacity"] == {"max_streams": 8, "from": "recipe"}
    assert repo.read_params(current / "admit", AdmitParams).max_streams == 8


def test_every_built_model_is_its_spec(built):
    """config.pbtxt is written from talkserve.spec: the same tensors, and parameters its python model
    parses with the spec's class (one JSON parameter, no loose strings)."""
    _recipe, current = built
    layout = repo.read_params(current / "llm", spec.LLMParams).kv_layout
    specs = {s.name: s for s in (*spec.PYTHON_MODELS, spec.llm_decoder(layout), *spec.ENSEMBLES)}
    for name, s in specs.items():
        cfg = repo.read_config(current / name)
        assert [(i.name, list(i.dims), i.optional) for i in cfg.input] == \
            [(t.name, list(t.dims), t.optional) for t in s.inputs], name
        assert [(o.name, mc.DataType.Name(o.data_type)) for o in cfg.output] == \
            [(t.name, f"TYPE_{t.dtype}") for t in s.outputs], name
        assert cfg.model_transaction_policy.decoupled == s.decoupled, name
        if s.source:
            assert list(cfg.parameters) == [spec.PARAMS], name
            assert isinstance(repo.read_params(current / name, s.params), s.params)
            assert (current / name / "1" / "model.py").read_text() == \
                (repo.SERVING_MODELS / f"{s.source}.py").read_text()

