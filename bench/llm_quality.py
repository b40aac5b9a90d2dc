"""Benchmark: the LLM and its compressed forms side by side in one run, as the build makes them.

Per preset (fp32 = the exported teacher; the others through the build's own compression pipeline:
prune → distill from the teacher's replies → INT8, gates recorded, not enforced): our held-out QA
score (talkserve/compress/qa.py, asked as the served `llm` asks: persona, sentence limit, penalty),
perplexity increase and top-1 agreement against the teacher on held-out teacher replies, served
ONNX bytes, and under ONNX Runtime on this machine: time to first token (a 60-token prompt's
prefill) and decode tokens per second.

    python bench/llm_quality.py [--presets fp32,pruned30-int8,pruned50-int8] [--model smollm2] [--qa 110]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def ort_step(path: Path):
    import onnxruntime as ort

    from talkserve.compress.tasks.llm import onnx_layout

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    layout = onnx_layout(path)
    names = layout.output_names()
    return (lambda feeds: dict(zip(names, session.run(names, feeds), strict=True))), layout


def speed(step, layout, tok, runs: int = 3) -> tuple[float, float]:
    """(time to first token s, decode tokens/s): median of `runs`, 32 tokens decoded, eos ignored."""
    from talkserve.runtime.generate import generate_tokens, prompt_ids

    ids = prompt_ids(tok, "Can you explain, in a few friendly words, what a graphics processing unit does inside "
                          "a computer and why games need one?")
    firsts, rates = [], []
    for _ in range(runs):
        start = time.perf_counter()
        tokens = generate_tokens(step, layout, ids, 33, set())
        next(tokens)
        first = time.perf_counter()
        n = sum(1 for _ in tokens)
        rates.append(n / (time.perf_counter() - first))
        firsts.append(first - start)
    return float(np.median(firsts)), float(np.median(rates))


def qa_score(step, layout, tok, recipe, items) -> tuple[float, list[str]]:
    from talkserve.compress.qa import score
    from talkserve.runtime.generate import Shaping, prompt_ids, stream_reply
    from talkserve.runtime.spoken import clean_for_speech

    max_sentences, penalty = recipe.llm.shaping()
    shaping = Shaping(penalty, max_sentences, lambda s: clean_for_speech(s).text)
    replies = []

    def reply_to(question: str) -> str:
        ids = prompt_ids(tok, question, recipe.llm.persona)
        replies.append(" ".join(s.text for s in stream_reply(step, layout, tok, ids, 48, shaping=shaping)))
        return replies[-1]

    return score(reply_to, items)[0], replies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="fp32,pruned30-int8,pruned50-int8")
    ap.add_argument("--model", default="smollm2", help="llm.model (starter or smollm2)")
    ap.add_argument("--qa", type=int, default=0, help="ask only the first N questions (0 = all)")
    ap.add_argument("--steps", type=int, default=None, help="distillation steps per pruning step (default: preset's)")
    ap.add_argument("--out", type=Path, default=Path("bench-results"))
    args = ap.parse_args()
    from talkserve.compress.data import DataSource
    from talkserve.compress.pipeline import compress_model, evaluate
    from talkserve.compress.presets import preset
    from talkserve.compress.qa import QUESTIONS
    from talkserve.compress.tasks import LLMTask
    from talkserve.export import export_llm_decoder
    from talkserve.models.llm import hf_directory, load_llm
    from talkserve.recipe import Recipe

    recipe = Recipe()
    recipe.llm.model = args.model
    teacher, tok = load_llm(hf_directory(recipe.llm.resolved_path()))
    items = QUESTIONS[: args.qa or None]
    start = time.monotonic()
    task = LLMTask(teacher, tok, DataSource(None, recipe.compress.held_out, recipe.compress.max_examples),
                   corpus=recipe.llm.is_starter())
    print(f"teacher replies to {len(task.train) + len(task.held_out())} prompts in {time.monotonic() - start:.0f}s",
          flush=True)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="talkserve-llm-bench-") as work:
        for name in args.presets.split(","):
            out = Path(work) / name
            out.mkdir()
            start = time.monotonic()
            if name == "fp32":
                served = out / "model.fp32.onnx"
                export_llm_decoder(teacher, served)
                metrics, gates = evaluate(task, task.onnx_runner(served)), []
            else:
                cfg = preset(name).llm
                if args.steps is not None:
                    cfg.distill.steps = args.steps
                _, report = compress_model(task, cfg, out, accept=True, log=lambda m: print(m, flush=True))
                served, metrics = out / report.served, report.after.metrics
                gates = [g.describe() for g in report.gates]
            built_s = time.monotonic() - start
            step, layout = ort_step(served)
            ttft, rate = speed(step, layout, tok)
            qa, replies = qa_score(step, layout, tok, recipe, items)
            rows[name] = {"qa": qa, "perplexity_increase": metrics["perplexity_increase"],
                          "top1_agreement": metrics["top1_agreement"], "bytes": served.stat().st_size,
                          "ttft_s": ttft, "tokens_per_s": rate, "kv_heads": layout.num_kv_heads, "gates": gates,
                          "built_s": built_s, "replies": dict(zip([q.question for q in items], replies, strict=True))}
            r = rows[name]
            print(f"{name}: QA {qa:.1f}, perplexity +{r['perplexity_increase'] * 100:.1f} %, top-1 agreement "
                  f"{r['top1_agreement'] * 100:.1f} %, {r['bytes'] / 2**20:.0f} MiB, first token {ttft * 1000:.0f} ms, "
                  f"{rate:.1f} tokens/s ({built_s:.0f}s to make)", flush=True)
    base = rows.get("fp32")
    print(f"\n{args.model}, {len(items)} questions, one run:")
    print("| form | QA score | perplexity increase | top-1 agreement | bytes | first token | tokens/s |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        ratio = f" ({base['bytes'] / r['bytes']:.1f}× smaller)" if base and name != "fp32" else ""
        print(f"| {name} | {r['qa']:.1f} | {r['perplexity_increase'] * 100:+.1f} % | "
              f"{r['top1_agreement'] * 100:.1f} % | {r['bytes'] / 2**20:.0f} MiB{ratio} | "
              f"{r['ttft_s'] * 1000:.0f} ms | {r['tokens_per_s']:.1f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"llm_quality_{args.model}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
