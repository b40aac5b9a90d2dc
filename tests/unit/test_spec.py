"""The served models' contract (talkserve.spec): parameters written once and parsed with the same
class, and the decoder's feed dict built in one place."""

from __future__ import annotations

import pytest


def test_params_round_trip_and_a_stale_config_names_the_fix():
    from talkserve import spec
    from talkserve.server.repository import model_config

    params = spec.AdmitParams(max_streams=3, stream_lease_seconds=60.0)
    cfg = model_config(spec.ADMIT, params)
    as_stub_sees_it = {"name": "admit", "parameters": {k: {"string_value": v.string_value}
                                                       for k, v in cfg.parameters.items()}}
    assert spec.AdmitParams.from_config(as_stub_sees_it) == params
    with pytest.raises(ValueError, match=r"no `talkserve_params`.*rebuild the repository"):
        spec.AdmitParams.from_config({"name": "admit", "parameters": {"max_streams": {"string_value": "3"}}})
    with pytest.raises(ValueError, match=r"bad `talkserve_params`.*max_streams"):
        spec.AdmitParams.from_config({"name": "admit", "parameters": {
            spec.PARAMS: {"string_value": '{"max_streams": 0, "stream_lease_seconds": 60}'}}})
    with pytest.raises(TypeError, match="admit takes AdmitParams"):
        model_config(spec.ADMIT, spec.NoParams())


def test_kv_feeds_are_one_decoder_step():
    import numpy as np

    from talkserve.spec import KVLayout

    layout = KVLayout(num_layers=2, num_kv_heads=3, head_dim=4, vocab_size=10)
    first = layout.feeds(np.asarray([[1, 2, 3]], np.int64))
    assert list(first) == layout.input_names()
    assert first["past_key_values.0.key"].shape == (1, 3, 0, 4)
    assert first["position_ids"].tolist() == [[0, 1, 2]] and first["attention_mask"].shape == (1, 3)
    past = {n: np.zeros((1, 3, 3, 4), np.float32) for n in layout.past_names()}
    step = layout.feeds(np.asarray([[7]], np.int64), past, 3)
    assert step["position_ids"].tolist() == [[3]] and step["attention_mask"].shape == (1, 4)


def test_the_recipe_sets_how_many_lipsync_instances_draw(tmp_path):
    from talkserve.recipe import Recipe
    from talkserve.server import repository as repo
    from talkserve.targets.cpu import lipsync_step

    recipe = Recipe()
    recipe.lipsync.kind, recipe.lipsync.instances = "warp", 2  # warp: no generator to export
    lipsync_step(tmp_path, recipe, repo.BuildContext(build_id="t"))
    cfg = repo.read_config(tmp_path / "lipsync")
    assert [g.count for g in cfg.instance_group] == [2]
    assert cfg.model_transaction_policy.decoupled
