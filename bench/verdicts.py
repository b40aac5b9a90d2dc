"""Benchmark: do builds of one recipe give the same gate verdicts? Compresses one model of a preset
N times, each in a fresh process (ONNX Runtime's unseeded random ops draw differently per process),
and prints every gate's value per build and whether all builds agree.

    python bench/verdicts.py --preset pruned30-int8 --model piper --builds 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

ONE = r"""
import json, sys, tempfile
from pathlib import Path
from talkserve.compress.data import DataSource
from talkserve.compress.pipeline import compress_model
from talkserve.compress.presets import preset
from talkserve.compress.tasks import PiperTask
from talkserve.recipe import TTSRecipe
name, held_out, examples = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = preset(name)
task = PiperTask(*TTSRecipe().resolved_paths(), DataSource(None, held_out, examples))
_, report = compress_model(task, c.piper, Path(tempfile.mkdtemp()), True, 1, log=lambda s: None)
print(json.dumps({"served": report.cpu_form, "weight_only": report.weight_only_groups,
                  "gates": {g.metric: [round(g.value, 6), g.passed] for g in report.gates}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="pruned30-int8")
    ap.add_argument("--model", default="piper", choices=["piper"])
    ap.add_argument("--builds", type=int, default=5)
    ap.add_argument("--held-out", type=int, default=6, help="held-out sentences per gate (the recipe default)")
    ap.add_argument("--examples", type=int, default=40)
    args = ap.parse_args()
    runs = []
    for i in range(args.builds):
        done = subprocess.run([sys.executable, "-c", ONE, args.preset, str(args.held_out), str(args.examples)],
                              capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"build {i + 1}: {runs[-1]}", flush=True)
    same = all(r == runs[0] for r in runs)
    print(f"{args.builds} builds of {args.preset}/{args.model}: " + ("all agree" if same else "DISAGREE"))
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
