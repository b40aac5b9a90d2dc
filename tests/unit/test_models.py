"""Checkpoint formats load as published: Wav2Lip's DataParallel file, a Hugging Face LLM directory."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from talkserve.export import export_llm_decoder
from talkserve.models.llm import check_model_dir, load_llm
from talkserve.models.wav2lip import Wav2Lip, load_wav2lip, wav2lip_state_dict
from talkserve.recipe import STARTER_LLM
from talkserve.runtime.generate import stream_sentences
from talkserve.spec import KVLayout


def test_wav2lip_has_the_published_size_and_shapes():
    model = Wav2Lip().eval()
    assert sum(p.numel() for p in model.parameters()) == 36_298_035  # official wav2lip.pth: 36.3M
    with torch.no_grad():
        out = model(torch.randn(2, 1, 80, 16), torch.rand(2, 6, 96, 96))
    assert out.shape == (2, 3, 96, 96)
    assert out.min() >= 0 and out.max() <= 1


def test_wav2lip_checkpoint_in_published_layout_loads(tmp_path):
    torch.manual_seed(3)
    source = Wav2Lip().eval()
    for m in source.modules():  # non-default BN statistics, so a skipped buffer would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ckpt = wav2lip_state_dict(source)
    keys = list(ckpt["state_dict"])
    for expected in ("module.face_encoder_blocks.0.0.conv_block.0.weight",
                     "module.audio_encoder.0.conv_block.1.running_mean",
                     "module.face_decoder_blocks.6.0.conv_block.0.weight", "module.output_block.1.bias"):
        assert expected in keys
    path = tmp_path / "wav2lip_gan.pth"
    torch.save(ckpt, path)
    loaded = load_wav2lip(path)
    mel, face = torch.randn(1, 1, 80, 16), torch.rand(1, 6, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(mel, face), source(mel, face))


def test_corrupt_and_foreign_checkpoints_are_named(tmp_path):
    truncated = tmp_path / "wav2lip.pth"
    torch.save(wav2lip_state_dict(Wav2Lip()), truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable Wav2Lip checkpoint"):
        load_wav2lip(truncated)
    foreign = tmp_path / "other.pth"
    torch.save({"state_dict": {"module.fc.weight": torch.zeros(2, 2)}}, foreign)
    with pytest.raises(ValueError, match="not the Wav2Lip layout"):
        load_wav2lip(foreign)


def test_hf_llm_directory_loads_through_the_public_loader(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (tmp_path / f).write_bytes((STARTER_LLM / f).read_bytes())
    model, tokenizer = load_llm(tmp_path)
    assert KVLayout.from_config(model.config) == KVLayout(2, 2, 8, 64)
    assert tokenizer.eos_token == "<|eos|>"


def test_missing_llm_directory_is_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        check_model_dir(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not a Hugging Face model directory"):
        check_model_dir(tmp_path)


@pytest.fixture(scope="module")
def starter_step(tmp_path_factory):
    model, tokenizer = load_llm(STARTER_LLM)
    path = tmp_path_factory.mktemp("llm") / "decoder.onnx"
    export_llm_decoder(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    layout = KVLayout.from_config(model.config)
    names = layout.output_names()
    return (lambda feeds: dict(zip(names, session.run(names, feeds), strict=True))), layout, tokenizer


@pytest.mark.parametrize(("question", "first"), [
    ("Hello!", "Hello, it is nice to meet you."),
    ("What is pruning?", "Pruning removes the parts of a network that do the least work."),
    ("tell me a joke", "Why did the computer go to the doctor?"),
])
def test_starter_llm_answers_in_readable_sentences(starter_step, question, first):
    step, layout, tokenizer = starter_step
    sentences = [s.text for s in stream_sentences(step, layout, tokenizer, question, 96)]
    assert len(sentences) >= 2
    assert sentences[0] == first
    for s in sentences:
        words = s.rstrip(".!?").split()
        assert s[0].isupper() and s[-1] in ".!?" and all(w.isascii() for w in words)


def test_generation_with_kv_cache_matches_full_recompute(starter_step):
    """The cached loop must pick the same tokens as running the whole sequence each step."""
    step, layout, tokenizer = starter_step
    model, _ = load_llm(STARTER_LLM)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Who are you?"}], add_generation_prompt=True,
                                        tokenize=True, return_dict=False)
    full = list(ids)
    with torch.no_grad():
        for _ in range(12):
            full.append(int(model(torch.tensor([full])).logits[0, -1].argmax()))
    from talkserve.runtime.generate import generate_tokens

    cached = list(generate_tokens(step, layout, ids, 12, eos_ids=set()))
    assert cached == full[len(ids):]
    assert np.isfinite(cached).all()


@pytest.mark.slow
def test_starter_training_is_reproducible(tmp_path):
    """Same script, same seed → byte-identical weights and tokenizer (short schedule for CI)."""
    import hashlib

    from talkserve.training.llm import TrainConfig, train

    def digest(path):
        return {f.name: hashlib.sha256(f.read_bytes()).hexdigest()
                for f in sorted(path.iterdir()) if f.name in ("model.safetensors", "tokenizer.json")}

    cfg = TrainConfig(steps=8, batch_size=8)
    a, b = train(tmp_path / "a", cfg), train(tmp_path / "b", cfg)
    assert digest(a) == digest(b) and len(digest(a)) == 2
    model, tokenizer = load_llm(a)  # and it is a normal Hugging Face directory
    assert model.config.num_key_value_heads == 2 and tokenizer.chat_template
