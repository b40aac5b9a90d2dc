"""The compression report: per model, before → after, as Markdown, JSON and a PNG bar chart."""

from __future__ import annotations

from pathlib import Path

from talkserve.compress.pipeline import ModelReport, write_json

ROWS = [  # (label, getter, format)
    ("params", lambda m: m.params, "{:,.0f}"),
    ("bytes on disk", lambda m: m.bytes, "{:,.0f}"),
    ("MACs", lambda m: m.macs, "{:.3g}"),
    ("CPU latency (ORT) ms", lambda m: m.latency_s * 1e3, "{:.1f}"),
    ("peak RSS MiB", lambda m: m.peak_mb, "{:.0f}"),
]


def _fmt(fmt: str, value) -> str:
    return "—" if value is None else fmt.format(value)


def _ratio(before, after) -> str:
    if before is None or after is None or not after:
        return ""
    return f"{before / after:.2f}×"


def markdown(reports: list[ModelReport], title: str) -> str:
    lines = [f"# Compression report: {title}", "",
             "Teacher = the uncompressed model each student is compared with; latency is the median of "
             "ONNX Runtime CPU runs measured side by side in this build.", ""]
    for r in reports:
        lines += [f"## {r.name} — served as `{r.served}` ({r.cpu_form})", "",
                  "| | before | after | before/after |", "|---|---:|---:|---:|"]
        for label, get, fmt in ROWS:
            b, a = get(r.before), get(r.after)
            lines.append(f"| {label} | {_fmt(fmt, b)} | {_fmt(fmt, a)} | {_ratio(b, a)} |")
        for key in sorted(set(r.before.metrics) | set(r.after.metrics)):
            lines.append(f"| {key} (vs teacher) | {_fmt('{:.4g}', r.before.metrics.get(key))} | "
                         f"{_fmt('{:.4g}', r.after.metrics.get(key))} | |")
        lines += ["", "Gates:", *[f"- {g.describe()}" for g in r.gates]]
        if r.accepted_failures:
            lines += ["", "**Published despite failed gates (--accept-failed-gates):**",
                      *[f"- {f}" for f in r.accepted_failures]]
        for step in r.prune_steps:
            lines.append(f"- pruned {step['ratio']:.0%}: {step['params']:,} params, distill loss "
                         f"{step['distill_loss_first']} → {step['distill_loss_last']}")
        if r.float_groups:
            lines.append(f"- kept in float: {', '.join(r.float_groups)}")
        if r.weight_only_groups:
            lines.append(f"- weight-only INT8 (activations float): {', '.join(r.weight_only_groups)}")
        if r.sensitivity:
            worst = ", ".join(f"{g} ({e:.3g})" for g, e in list(r.sensitivity.items())[:5])
            lines.append(f"- most INT8-sensitive groups (added error): {worst}")
        for form, v in r.forms.items():
            verdict = "pass" if v["passed"] else "FAIL"
            note = "" if v.get("quantized", True) else " (quantized nothing: not an INT8 form here)"
            lines.append(f"- CPU form {form}: {v['latency_s'] * 1e3:.1f} ms, gates {verdict}{note}")
        if r.trt:
            lines.append(f"- TensorRT input: `{r.trt}` (s8 symmetric Q/DQ, per-channel weights)")
        lines.append("")
    return "\n".join(lines)


def chart(reports: list[ModelReport], path: Path) -> None:
    """after/before ratios per model (bytes, latency, params, peak memory): lower is better."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [("bytes", lambda m: m.bytes), ("latency", lambda m: m.latency_s), ("params", lambda m: m.params),
            ("peak RSS", lambda m: m.peak_mb)]
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(reports), 3.6), dpi=100)
    x = np.arange(len(reports))
    width = 0.8 / len(keys)
    for i, (label, get) in enumerate(keys):
        values = [get(r.after) / get(r.before) if get(r.before) else 0 for r in reports]
        ax.bar(x + (i - len(keys) / 2 + 0.5) * width, values, width, label=label)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xticks(x, [r.name for r in reports])
    ax.set_ylabel("after / before")
    ax.set_title("Compressed vs. uncompressed (lower is smaller/faster)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def write_report(reports: list[ModelReport], out_dir: Path, title: str) -> str:
    """compression_report.{md,json,png} in `out_dir`; returns the Markdown (also for printing)."""
    md = markdown(reports, title)
    tmp = out_dir / "compression_report.md.tmp"
    tmp.write_text(md, encoding="utf-8")
    tmp.replace(out_dir / "compression_report.md")
    write_json(out_dir / "compression_report.json", {"title": title, "models": [r.as_dict() for r in reports]})
    if reports:
        chart(reports, out_dir / "compression_report.png")
    return md
