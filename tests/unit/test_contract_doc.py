"""docs/contract.md is generated from talkserve/spec.py and the metric definitions; it must not drift."""

from __future__ import annotations

import dataclasses

from talkserve import contract_doc, spec


def test_the_contract_doc_is_what_the_spec_and_the_metrics_say():
    changed = contract_doc.drift()
    assert not changed, "docs/contract.md drifted (python -m talkserve.contract_doc):\n" + "\n".join(changed)


def test_a_changed_field_is_named_by_the_drift(monkeypatch):
    renamed = tuple(dataclasses.replace(t, name="speaking_rate") if t.name == "max_new_tokens" else t
                    for t in spec.TALKING_HEAD.inputs)
    monkeypatch.setattr(spec, "ENSEMBLES", (dataclasses.replace(spec.TALKING_HEAD, inputs=renamed),
                                            spec.TALKING_HEAD_VOICE))
    changed = contract_doc.drift()
    assert any(line.startswith("+") and "`speaking_rate`" in line for line in changed), changed
    assert any(line.startswith("-") and "`max_new_tokens`" in line for line in changed), changed


def test_a_changed_parameter_default_is_named_by_the_drift(monkeypatch):
    monkeypatch.setattr(spec.LipsyncParams.model_fields["unread_parts"], "default", 5)
    changed = contract_doc.drift()
    assert any("`unread_parts`" in line and "| 5 |" in line for line in changed), changed


def test_metrics_are_found_by_literal_and_by_a_named_constant(tmp_path):
    pkg = tmp_path / "talkserve"
    pkg.mkdir()
    (pkg / "names.py").write_text('SKIPPED = "talkserve_frames_skipped_total"\n')
    (pkg / "model.py").write_text(
        "from talkserve.names import SKIPPED\n"
        "class M:\n"
        "    def initialize(self, m):\n"
        '        self.a = m.counter("talkserve_parts_total", "Parts " + "sent")\n'
        '        self.b = m.counter(SKIPPED, "Frames skipped")\n'
        '        self.c = m.counter("other_metric_total", "not ours")\n')
    found = {name: (kind, description) for name, kind, _, description, _ in contract_doc.metrics(pkg)}
    assert found == {"talkserve_parts_total": ("counter", "Parts sent"),
                     "talkserve_frames_skipped_total": ("counter", "Frames skipped")}
