"""Benchmark: does the prefix KV cache hit where users meet it — over the served pipeline?

One build, served three ways in one run (`llm` instances as the build made them, one instance, and
the cache off), each answering the same conversations through `TalkClient.conversation` (history
sent back exactly as the replies streamed). Per way: follow-up turns that hit, prompt tokens reused
per hit, the `llm`'s own time to first token on the last turn, and the replies (identical with the
cache and without). Then why turns missed before: turn N's cached ids (its prompt and the reply
it generated) against turn N+1's prompt ids, and where they first differ.

    python bench/prefix_cache_service.py [--conversations 3] [--turns 3] [--max-streams 3] [--model smollm2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from pipeline import bench_home

QUESTIONS = ["What is pruning?", "Tell me more.", "Why?", "What is quantization?", "Tell me more.",
             "What is distillation?", "What did I just ask?"]
LOOKUPS, REUSED = "talkserve_llm_prefix_cache_lookups_total", "talkserve_llm_prefix_cache_reused_tokens_total"
TTFT = "talkserve_llm_time_to_first_token_seconds_sum"


def metric(server, name: str, **labels: str) -> float:
    """Sum of a metric's series with these labels on the server's Prometheus endpoint."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{server.ports.metrics}/metrics", timeout=5) as r:
        lines = r.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith((name + "{", name + " "))
               and all(f'{k}="{v}"' in line for k, v in labels.items()))


def converse(server, conversations: int, turns: int) -> dict:
    """The conversations one after another; per turn: hit or not, tokens reused, llm time to first token."""
    from talkserve.client import TalkClient

    url = f"127.0.0.1:{server.ports.grpc}"
    rows, replies = [], []
    with TalkClient(url) as client:
        for c in range(conversations):
            conv = client.conversation("sample")
            for t in range(turns):
                hits, reused, ttft = (metric(server, LOOKUPS, result="hit"), metric(server, REUSED),
                                      metric(server, TTFT))
                start = time.perf_counter()
                text = [ch.text for ch in conv.say(QUESTIONS[(c + t) % len(QUESTIONS)]) if ch.part == 0]
                rows.append({"conversation": c, "turn": t, "hit": metric(server, LOOKUPS, result="hit") - hits,
                             "reused": metric(server, REUSED) - reused, "llm_ttft_s": metric(server, TTFT) - ttft,
                             "reply_s": time.perf_counter() - start})
                replies.append(" ".join(text))
    follow = [r for r in rows if r["turn"] > 0]
    hit = [r for r in follow if r["hit"] > 0]
    return {"rows": rows, "replies": replies, "follow_ups": len(follow), "follow_up_hits": len(hit),
            "reused_per_hit": sum(r["reused"] for r in hit) / max(len(hit), 1),
            "last_turn_ttft_s": [r["llm_ttft_s"] for r in rows if r["turn"] == turns - 1]}


def serve_copy(current: Path, log: Path, llm_instances: int | None = None, cache_mib: float | None = None):
    from talkserve.server import repository as repo
    from talkserve.server.serve import Ports, Server

    copy = Path(tempfile.mkdtemp(prefix="talkserve-bench-repo-")) / "repository"
    shutil.copytree(current.resolve(), copy, symlinks=True)
    if llm_instances:
        repo.set_instances(copy / "llm", llm_instances)
    if cache_mib is not None:
        repo.update_params(copy / "llm", prefix_cache_mib=cache_mib)
    return copy, Server(copy, Ports.free(), log=log)


def instances_of(current: Path) -> int:
    from talkserve.server import repository as repo

    return repo.read_config(current / "llm").instance_group[0].count


def key_gaps(recipe, replies: list[str], conversations: int, turns: int) -> list[dict]:
    """Where turn N's cached ids (everything its loop fed the decoder: prompt and generated reply) and
    turn N+1's prompt ids first differ, replayed on the build's own decoder as the server runs it
    (persona, shaping) with the served replies as history."""
    import numpy as np

    from talkserve.export import ort_decoder
    from talkserve.models.llm import hf_directory
    from talkserve.runtime.generate import Shaping, prompt_ids, stream_reply

    step, layout, tok = ort_decoder(hf_directory(recipe.llm.resolved_path()))
    max_sentences, penalty = recipe.llm.shaping()
    system = recipe.llm.persona
    out = []
    for c in range(conversations):
        history = []
        for t in range(turns - 1):
            q = QUESTIONS[(c + t) % len(QUESTIONS)]
            ids = prompt_ids(tok, q, system, history)
            cached: list[int] = []

            def recording(feeds, cached=cached):
                cached.extend(feeds["input_ids"][0].tolist())
                return step(feeds)

            list(stream_reply(recording, layout, tok, ids, recipe.llm.max_new_tokens,
                              shaping=Shaping(penalty, max_sentences)))
            history += [{"role": "user", "content": q}, {"role": "assistant", "content": replies[c * turns + t]}]
            nxt = prompt_ids(tok, QUESTIONS[(c + t + 1) % len(QUESTIONS)], system, history)
            n = min(len(cached), len(nxt))
            differ = np.flatnonzero(np.asarray(cached[:n]) != np.asarray(nxt[:n]))
            at = int(differ[0]) if len(differ) else n
            out.append({"turn": t, "cached": len(cached), "next_prompt": len(nxt), "first_difference": at,
                        "whole_key_is_prefix": at == len(cached) and len(cached) < len(nxt),
                        "cached_there": tok.decode(cached[at:at + 4], skip_special_tokens=False),
                        "next_there": tok.decode(nxt[at:at + 4], skip_special_tokens=False)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conversations", type=int, default=3)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--max-streams", type=int, default=3, help="the build's stream limit (sizes the llm loops)")
    ap.add_argument("--model", default="smollm2", help="llm.model: smollm2 (the default) or starter")
    ap.add_argument("--out", type=Path, default=Path("bench-results"))
    args = ap.parse_args()
    from talkserve.recipe import Recipe
    from talkserve.server.repository import build
    from talkserve.targets.cpu import STEPS

    with bench_home() as (root, db):
        recipe = Recipe()
        recipe.serving.avatar_db, recipe.serving.max_streams = db, args.max_streams
        recipe.llm.model = args.model
        current = build(recipe, root / "repo", STEPS, progress=lambda s: None)
        built = instances_of(current)
        report = {}
        for label, kw in [(f"{built} instances (the build's)", {}), ("1 instance", {"llm_instances": 1}),
                          ("cache off", {"cache_mib": 0.0})]:
            copy, server = serve_copy(current, root / "triton.log", **kw)
            with server:
                report[label] = converse(server, args.conversations, args.turns)
                report[label]["cache_bytes"] = metric(server, "talkserve_llm_prefix_cache_bytes")
            shutil.rmtree(copy.parent, ignore_errors=True)
            r = report[label]
            print(f"{label}: {r['follow_up_hits']}/{r['follow_ups']} follow-ups hit, "
                  f"{r['reused_per_hit']:.0f} tokens reused per hit, llm time to first token on turn "
                  f"{args.turns}: {[round(s * 1000, 1) for s in r['last_turn_ttft_s']]} ms, cache holds "
                  f"{r['cache_bytes'] / 2**20:.2f} MiB (bound {recipe.llm.prefix_cache_mib:g} MiB for all instances)",
                  flush=True)
        on, off = report[f"{built} instances (the build's)"], report["cache off"]
        print(f"replies identical with the cache and without: {on['replies'] == off['replies']}")
        gaps = key_gaps(recipe, on["replies"], args.conversations, args.turns)
        for g in gaps:
            print(f"  turn {g['turn']} cached {g['cached']} ids, next prompt {g['next_prompt']}: first differ at "
                  f"{g['first_difference']} ({g['cached_there']!r} vs {g['next_there']!r}); whole key a prefix: "
                  f"{g['whole_key_is_prefix']}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prefix_cache_service.json").write_text(json.dumps({"runs": report, "key_gaps": gaps}, indent=1))


if __name__ == "__main__":
    main()
