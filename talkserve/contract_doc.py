"""docs/contract.md, generated: the served contract as `talkserve.spec` writes it, and every metric
the project defines, read from the code that defines it.

    python -m talkserve.contract_doc          # rewrite docs/contract.md
    python -m talkserve.contract_doc --check  # exit 1, naming the lines, if it drifted

tests/unit/test_contract_doc.py runs the check, so a field changed in the spec without the doc
fails CI with the field's line named.
"""

from __future__ import annotations

import ast
import difflib
import sys
from pathlib import Path

from pydantic import BaseModel

from talkserve import spec

PACKAGE = Path(__file__).resolve().parent
DOC = PACKAGE.parent / "docs" / "contract.md"
# the helpers that define a metric: talkserve.serving.triton.Metrics and prometheus_client's classes
METRIC_CALLS = {"counter": "counter", "counters_by": "counter", "gauge": "gauge", "histogram": "histogram",
                "Counter": "counter", "Gauge": "gauge", "Histogram": "histogram"}


def _dims(t: spec.Tensor) -> str:
    return "[" + ", ".join("n" if d == -1 else str(d) for d in t.dims) + "]"


def _tensor_rows(tensors: tuple[spec.Tensor, ...]) -> list[str]:
    dtype = {"STRING": "BYTES"}
    return [f"| `{t.name}` | {dtype.get(t.dtype, t.dtype)} {_dims(t)}{', optional' if t.optional else ''} | {t.doc} |"
            for t in tensors]


def _model_section(s: spec.ModelSpec) -> list[str]:
    kind = "ensemble" if s.source is None and s.name.startswith("talking_head") else "python model"
    lines = [f"### `{s.name}` ({kind}{', decoupled: streams responses' if s.decoupled else ''})", "",
             "| input | type | meaning |", "|---|---|---|", *_tensor_rows(s.inputs), "",
             "| output | type | meaning |", "|---|---|---|", *_tensor_rows(s.outputs), ""]
    return lines


def _param_rows(cls: type[BaseModel], prefix: str = "") -> list[str]:
    rows = []
    for name, field in cls.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += _param_rows(annotation, f"{prefix}{name}.")
            continue
        default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
        kind = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
        rows.append(f"| `{prefix}{name}` | {kind} | {default} | {field.description or ''} |")
    return rows


def _params_section() -> list[str]:
    lines = ["## Model parameters", "",
             f"Each python model reads its parameters from one `config.pbtxt` parameter, `{spec.PARAMS}` (JSON), "
             "parsed with the class below; the build writes them from the recipe.", ""]
    for name, cls in spec.PARAMS_OF.items():
        if not cls.model_fields:
            continue
        lines += [f"### `{name}` ({cls.__name__})", "", "| field | type | default | meaning |", "|---|---|---|---|",
                  *_param_rows(cls), ""]
    return lines


def _text(node: ast.AST, names: dict[str, str] | None = None) -> str | None:
    """A string literal, `+`-joined literals, or a name bound to one in `names` (a metric's name
    kept as a constant where a reader of the metric needs it too)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and names:
        return names.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left, names), _text(node.right, names)
        return None if left is None or right is None else left + right
    return None


def _string_constants(trees: list[ast.Module]) -> dict[str, str]:
    """Module-level `NAME = "talkserve_..."` of every module (imported under the same name where used)."""
    found = {}
    for tree in trees:
        for node in tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and (value := _text(node.value)) and value.startswith("talkserve_")):
                found[node.targets[0].id] = value
    return found


def metrics(root: Path = PACKAGE) -> list[tuple[str, str, str, str, str]]:
    """(name, kind, label, description, where) of every `talkserve_*` metric defined under `root`."""
    found = {}
    paths = sorted(root.rglob("*.py"))
    trees = [ast.parse(p.read_text(encoding="utf-8")) for p in paths]
    constants = _string_constants(trees)
    for path, tree in zip(paths, trees, strict=True):
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or len(node.args) < 2:
                continue
            fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            name, description = _text(node.args[0], constants), _text(node.args[1])
            if fn not in METRIC_CALLS or not name or not name.startswith("talkserve_") or description is None:
                continue
            label = ""
            if fn == "counters_by" and len(node.args) > 2:
                label = _text(node.args[2]) or ""
            elif len(node.args) > 2 and isinstance(node.args[2], ast.List):
                label = ", ".join(v for e in node.args[2].elts if (v := _text(e)))
            where = str(path.relative_to(root.parent))
            found.setdefault(name, (name, METRIC_CALLS[fn], label, " ".join(description.split()), where))
    return sorted(found.values())


def _metrics_section() -> list[str]:
    lines = ["## Metrics", "",
             "Served models' metrics are on Triton's metrics port (8002) with a `model` label; the client's "
             "(`talkserve_client_*`) on the process that uses `TalkClient`.", "",
             "| metric | kind | labels | meaning | defined in |", "|---|---|---|---|---|"]
    lines += [f"| `{n}` | {k} | {label} | {d} | `{w}` |" for n, k, label, d, w in metrics()]
    return [*lines, ""]


def _errors_section() -> list[str]:
    fields = ", ".join(f"`{f}`" for f in spec.REQUEST_FIELDS)
    return ["## Errors", "",
            "Send the stream header `triton_grpc_error: true` for gRPC status codes (NGC 25.x; off by default "
            "on the embedded 2.51, where that path can crash). Bad input is `INVALID_ARGUMENT` with the field "
            "named first (`<field>: <problem>`); `talkserve.client` restores the code where 2.51 drops it.", "",
            f"Fields a model can name: {fields}.", "",
            "| status | when | client |", "|---|---|---|",
            "| `INVALID_ARGUMENT` | a field is wrong (`text: is empty`, `avatar_id: 'x' is not registered`, "
            "`video_codec: 'vp9' is not one of raw, h264`) or Triton core rejected a dtype/shape | not retried |",
            "| `RESOURCE_EXHAUSTED` (sent as `UNAVAILABLE` with the limit's message) | the server runs its stream "
            "limit | retried with backoff |",
            "| `UNAVAILABLE` | the server is draining | retried on another replica |",
            "| `INTERNAL` | a model failed | not retried |", ""]


def render() -> str:
    lines = ["# The served contract", "",
             "<!-- generated by `python -m talkserve.contract_doc` from talkserve/spec.py and the metric "
             "definitions; edit those, not this file -->", "",
             "A client opens a gRPC stream (`ModelStreamInfer`) to an ensemble and receives one response per part "
             "of each sentence; the stream ends with the response Triton flags `triton_final_response` (send "
             "`enable_empty_final_response=True`). `talkserve.client.TalkClient` does all of this.", "",
             "## What a client calls", ""]
    for s in spec.ENSEMBLES:
        lines += _model_section(s)
    lines += ["## Inside the server", "",
              "The ensembles' steps, for whoever reads the repository or calls a step directly (`cancel`, `ack`).",
              ""]
    for s in (spec.ADMIT, spec.ASR, spec.LLM, spec.TTS, spec.LIPSYNC, spec.WAV2LIP, spec.CANCEL, spec.ACK):
        lines += _model_section(s)
    lines += _errors_section() + _params_section() + _metrics_section()
    return "\n".join(lines).rstrip() + "\n"


def drift(doc: Path = DOC) -> list[str]:
    """The lines that differ between `doc` and what the code says now (empty: in step)."""
    have = doc.read_text(encoding="utf-8").splitlines() if doc.exists() else []
    return [line for line in difflib.unified_diff(have, render().splitlines(), "docs", "code", lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        changed = drift()
        for line in changed:
            print(line)
        if changed:
            print(f"{DOC} drifted from the code: run `python -m talkserve.contract_doc`", file=sys.stderr)
        return 1 if changed else 0
    DOC.parent.mkdir(exist_ok=True)
    tmp = DOC.with_suffix(".tmp")
    tmp.write_text(render(), encoding="utf-8")
    tmp.replace(DOC)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
