"""Compression on tiny models: pruning shrinks tensors, INT8 has Q/DQ and holds its gate, a broken
model fails its gate by name; plus the published checkpoint layouts of HiFi-GAN and FastSpeech2."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from talkserve.compress import config as C
from talkserve.compress.data import DataSource
from talkserve.compress.gates import GateFailure, check, failed, word_error_rate
from talkserve.compress.pipeline import compress_model
from talkserve.compress.presets import PRESETS, preset
from talkserve.compress.prune import count_params, head_plan, prune_convnet, prune_llm, schedule
from talkserve.compress.quantize import has_qdq
from talkserve.compress.report import write_report
from talkserve.compress.tasks import VocoderTask
from talkserve.models.fastspeech2 import FastSpeech2, FastSpeech2Config, load_fastspeech2, save_fastspeech2
from talkserve.models.hifigan import V1, V3, Generator, HiFiGANConfig, load_hifigan, save_hifigan
from talkserve.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
TINY_VOCODER = HiFiGANConfig(resblock="2", upsample_rates=[8, 8, 4], upsample_kernel_sizes=[16, 16, 8],
                             upsample_initial_channel=32, resblock_kernel_sizes=[3, 5],
                             resblock_dilation_sizes=[[1, 2], [2, 6]])
TINY_ACOUSTIC = FastSpeech2Config(d_model=32, encoder_layers=1, decoder_layers=1, ffn_channels=64,
                                  variance_channels=32)


@pytest.fixture(scope="module")
def data() -> DataSource:
    return DataSource(held_out=2, max_texts=8)  # Piper speaks 8 built-in sentences


# ---- published layouts ---------------------------------------------------------------------


def test_hifigan_v1_has_the_published_size():
    assert count_params(Generator(V1)) == 13_926_017  # HiFi-GAN V1 generator: 13.92 M


def test_official_weight_norm_generator_file_loads_as_is(tmp_path):
    """A `{"generator": ...}` file with weight_g/weight_v (as jik876/hifi-gan saves it) loads and matches."""
    torch.manual_seed(0)
    official = Generator(V3)
    for m in official.modules():
        if isinstance(m, nn.Conv1d | nn.ConvTranspose1d):
            torch.nn.utils.weight_norm(m)  # what the official module applies in __init__
            with torch.no_grad():
                m.weight_g.mul_(torch.rand_like(m.weight_g) + 0.5)
    state = official.state_dict()
    assert "conv_pre.weight_g" in state and "resblocks.0.convs.1.weight_v" in state and "ups.2.weight_v" in state
    torch.save({"generator": state}, tmp_path / "g_02500000")
    loaded = load_hifigan(tmp_path / "g_02500000", V3)
    mel = torch.randn(1, 80, 12)
    with torch.no_grad():
        # folded weights vs g·v/|v| per call: float rounding only (failed once at 1e-6 in a full lane);
        # a weight loaded wrong is off by orders of magnitude more
        assert torch.allclose(loaded(mel), official(mel), atol=1e-5)
    with pytest.raises(ValueError, match="generator"):
        torch.save({"state_dict": state}, tmp_path / "wrong.pt")
        load_hifigan(tmp_path / "wrong.pt", V3)


def test_fastspeech2_predicts_durations_and_round_trips(tmp_path):
    model = load_fastspeech2(None)
    ids = torch.tensor([[5, 20, 30, 12, 4]])
    with torch.no_grad():
        mel, durations = model(ids)
    assert mel.shape == (1, 80, int(durations.sum())) and durations.shape == (1, 5)
    assert (durations >= 1).all()
    save_fastspeech2(model, tmp_path / "fs2.pt")
    with torch.no_grad():
        assert torch.equal(load_fastspeech2(tmp_path / "fs2.pt")(ids)[0], mel)


# ---- pruning -------------------------------------------------------------------------------


def test_schedule_takes_steps_no_larger_than_asked():
    assert schedule(0.3, 0.3) == [0.3]
    assert schedule(0.5, 0.3) == [0.25, 0.5]
    assert schedule(0.0, 0.3) == []


def test_conv_pruning_removes_channels_and_still_exports(tmp_path):
    from talkserve.export import export, vocoder_spec

    model = load_hifigan(None, TINY_VOCODER)
    before = count_params(model)
    mel = torch.randn(1, 80, 10)
    for _ in prune_convnet(model, (mel,), C.PruneConfig(ratio=0.5), [model.conv_post]):
        pass
    assert model.conv_pre.out_channels == 16 and model.ups[0].out_channels == 8  # tensors shrank, not masks
    assert model.conv_post.out_channels == 1  # the output is protected
    assert count_params(model) < 0.45 * before  # ~(1 - 0.5)² on inner layers
    assert model(mel).shape == (1, 1, 10 * 256)
    export(model, vocoder_spec(), tmp_path / "v.onnx")  # validated against PyTorch
    save_hifigan(model, tmp_path / "pruned.pt")  # the new shape travels with the weights
    reloaded = load_hifigan(tmp_path / "pruned.pt", TINY_VOCODER)
    assert torch.equal(reloaded(mel), model(mel))


def test_ignored_layers_must_exist():
    model = load_hifigan(None, TINY_VOCODER)
    with pytest.raises(ValueError, match="no module named"):
        list(prune_convnet(model, (torch.randn(1, 80, 4),), C.PruneConfig(ratio=0.3, ignored_layers=["nope"])))


def test_head_plan_is_gqa_consistent():
    assert head_plan(6, 2, 0.3) == (2, 2)  # one query head per group
    assert head_plan(6, 2, 0.5) == (1, 3)  # a whole KV group with its query heads
    assert head_plan(6, 2, 0.25, final_ratio=0.5) == (2, 3)  # on the way to dropping a group
    assert head_plan(32, 8, 0.3) == (6, 4)


@pytest.mark.slow
def test_llm_head_and_ffn_pruning_gives_a_normal_model(tmp_path):
    from transformers import AutoModelForCausalLM

    from talkserve.models.llm import load_llm
    from talkserve.recipe import STARTER_LLM

    model, tok = load_llm(STARTER_LLM)
    pruned = prune_llm(model, 0.5)
    c = pruned.config
    assert (c.num_attention_heads, c.num_key_value_heads, c.intermediate_size) == (3, 1, 256)
    assert pruned.model.layers[0].self_attn.q_proj.weight.shape == (3 * c.head_dim, c.hidden_size)
    assert count_params(pruned) < 0.6 * count_params(model)
    pruned.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = torch.tensor([tok.encode("Hello! Who are you?")])
    with torch.no_grad():
        assert torch.allclose(again(ids).logits, pruned(ids).logits)


# ---- schedule, INT8, gates -----------------------------------------------------------------


@pytest.mark.slow
def test_pruned_int8_vocoder_has_qdq_and_holds_its_gate(data, tmp_path):
    task = VocoderTask(load_hifigan(None, TINY_VOCODER), data)
    cfg = C.VocoderCompression.model_validate({
        "prune": {"ratio": 0.3}, "distill": {"steps": 20, "batch_size": 2},
        "quantize": {"precision": "int8", "keep_float": ["conv_pre", "conv_post"]},
        "gates": {"snr_min": 8.0, "stoi_min": 0.5}})
    student, report = compress_model(task, cfg, tmp_path, latency_runs=2, log=lambda _: None)
    assert student.conv_pre.out_channels < 32
    trt = onnx.load(str(tmp_path / report.trt))
    kinds = {n.op_type for n in trt.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= kinds
    # s8 activations, symmetric (zero point 0): what a strongly typed TensorRT build expects
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in trt.graph.initializer}
    zps = [inits[n.input[2]] for n in trt.graph.node if n.op_type == "QuantizeLinear"]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
    # every dequantized weight is INT8: TensorRT's parser rejects INT32 (quantized bias) DQ inputs
    dq_weights = [inits[n.input[0]] for n in trt.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert dq_weights and all(w.dtype == np.int8 for w in dq_weights)
    assert has_qdq(tmp_path / report.served)
    assert not failed(report.gates) and report.after.bytes < 0.8 * report.before.bytes  # tiny: Q/DQ scales weigh in
    assert [s["ratio"] for s in report.prune_steps] == [0.3]
    md = write_report([report], tmp_path, "test")
    assert "vocoder" in md and (tmp_path / "compression_report.png").stat().st_size > 1000
    assert (tmp_path / "compression_report.json").is_file()


@pytest.mark.slow
def test_fitting_the_vocoder_teacher_turns_a_constant_into_speech_band_audio(data):
    from talkserve.training.vocoder import FitConfig, fit_to_speech

    teacher = load_hifigan(None, TINY_VOCODER)
    mel = torch.from_numpy(VocoderTask(teacher, data).held_out()[0])

    def ac_to_dc() -> float:
        with torch.no_grad():
            y = teacher(mel)[0, 0].numpy()
        return float(y.std() / (abs(y.mean()) + 1e-9))

    before = ac_to_dc()
    losses = fit_to_speech(teacher, data.speech.train, FitConfig(steps=40))
    assert before < 0.1  # the official init: conv_post's bias, barely moving
    assert ac_to_dc() > 1 and np.mean(losses[-5:]) < np.mean(losses[:5])


class BrokenVocoder(VocoderTask):
    """Pruning that also flips the output layer's sign: a deliberately broken student."""

    def prune(self, student, cfg):
        for ratio, pruned in super().prune(student, cfg):
            with torch.no_grad():
                pruned.conv_post.weight.neg_()
                pruned.conv_post.bias.neg_()
            yield ratio, pruned


@pytest.mark.slow
def test_broken_model_fails_its_gate_by_name(data, tmp_path):
    """The build stops naming model, metric, value and threshold; --accept-failed-gates records it."""
    task = BrokenVocoder(load_hifigan(None, TINY_VOCODER), data)
    cfg = C.VocoderCompression.model_validate({"prune": {"ratio": 0.3}, "distill": {"steps": 0}})
    with pytest.raises(GateFailure, match=r"vocoder: snr = -[\d.]+ FAILS \(must be >= 10\)"):
        compress_model(task, cfg, tmp_path / "a", latency_runs=1, log=lambda _: None)
    _, report = compress_model(task, cfg, tmp_path / "b", accept=True, latency_runs=1, log=lambda _: None)
    assert report.accepted_failures and "snr" in report.accepted_failures[0]


def test_gate_directions():
    results = check("m", {"mouth_psnr": 30.0, "mouth_ssim": 0.5, "sync_r_drop": 0.01, "sync_lag_shift": 2.0,
                          "sync_r": 0.8}, C.Wav2LipGates())
    assert [r.passed for r in results] == [True, False, True, False, True]
    assert "mouth_ssim = 0.5 FAILS (must be >= 0.9)" in results[1].describe()
    assert "sync_lag_shift = 2 FAILS (must be <= 1)" in results[3].describe()
    assert "sync_r = 0.8 (reported, not gated)" in results[4].describe()
    assert not check("m", {"snr": 20, "stoi": 0.9, "pesq": float("nan")}, C.VocoderGates())[2].threshold


@pytest.mark.slow
def test_acoustic_int8_round_trip(data, tmp_path):
    from talkserve.compress.tasks import AcousticTask

    torch.manual_seed(0)
    teacher = FastSpeech2(TINY_ACOUSTIC).eval()
    task = AcousticTask(teacher, data)
    cfg = C.AcousticCompression.model_validate({"quantize": {"precision": "int8", "cpu_forms": ["dynamic"]},
                                                "gates": {"mel_l1_max": 0.5, "duration_error_max": 1.0}})
    _, report = compress_model(task, cfg, tmp_path, latency_runs=1, log=lambda _: None)
    assert report.cpu_form == "dynamic" and not failed(report.gates)


@pytest.mark.slow
def test_whisper_hears_the_piper_voice(data):
    """The WER gate's instrument: real Whisper tiny on real Piper speech."""
    from talkserve.compress.tasks import transcribe

    texts = data.texts.held_out
    heard = [transcribe(audio, sr) for audio, sr in data.speech.held_out]
    assert word_error_rate(texts, heard) < 0.3, heard


def test_held_out_data_is_never_trained_on(data):
    assert not set(data.texts.train) & set(data.texts.held_out)
    assert len(data.faces.held_out) == 2 and data.faces.train[0].shape == (96, 96, 3)


@pytest.mark.parametrize("name", PRESETS[1:])
def test_preset_files_match_the_named_presets(name):
    assert load_recipe(ROOT / "build" / "recipes" / f"{name}.yaml").compress == preset(name)


def test_recipe_rejects_a_pruning_step_too_large():
    with pytest.raises(ValueError, match="step"):
        C.PruneConfig(ratio=0.5, step=0.6)


def test_deepcopy_keeps_teacher_intact():
    teacher = load_hifigan(None, TINY_VOCODER)
    student = copy.deepcopy(teacher)
    list(prune_convnet(student, (torch.randn(1, 80, 4),), C.PruneConfig(ratio=0.3), [student.conv_post]))
    assert teacher.conv_pre.out_channels == 32
