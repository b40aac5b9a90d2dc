import onnx
import pytest
import torch

from talkserve.export import ExportValidationError, export, export_llm_decoder, wav2lip_spec
from talkserve.spec import KVLayout


@pytest.fixture
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(cfg).eval()


def test_llm_decoder_export_names_tensors_and_axes(tiny_llama, tmp_path):
    report = export_llm_decoder(tiny_llama, tmp_path / "decoder.onnx")
    graph = onnx.load(report.path).graph
    layout = KVLayout.from_config(tiny_llama.config)
    assert [i.name for i in graph.input] == layout.input_names()
    assert [o.name for o in graph.output] == layout.output_names()
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert dims["input_ids"] == ["batch", "sequence"]
    assert dims["past_key_values.0.key"] == ["batch", 2, "past_sequence", 8]
    out_dims = {o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in graph.output}
    assert out_dims["present.1.value"] == ["batch", 2, "total_sequence", 8]
    assert max(report.max_abs_diff.values()) < 1e-4


def test_failed_validation_leaves_no_file(tmp_path):
    from talkserve.models.wav2lip import Wav2Lip

    class Drifting(torch.nn.Module):
        """Exports fine but the ONNX graph differs from eager: eager adds noise at run time."""

        def __init__(self):
            super().__init__()
            self.net = Wav2Lip()

        def forward(self, mel, face):
            out = self.net(mel, face)
            return out + 0.01 if not torch.jit.is_tracing() else out

    target = tmp_path / "wav2lip.onnx"
    with pytest.raises(ExportValidationError, match=r"wav2lip\.frames: max abs diff"):
        export(Drifting().eval(), wav2lip_spec(), target)
    assert list(tmp_path.iterdir()) == []
