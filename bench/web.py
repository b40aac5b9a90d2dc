"""Benchmark: the browser view (`talkserve web`) as a person meets it, in headless Chromium.

One build per preset, served; the gateway in front of it; a browser with a fake microphone. Per
preset: time from sending a typed question to the first video frame of its reply painted (p50 of
`--questions`), the same for a spoken one (from the end of the hold), and the audio/video offset
the browser plays with (its inbound tracks' estimated playout positions, sampled during replies).
Writes a screenshot of the page mid-reply (docs/web.png with --screenshot).

    python bench/web.py [--presets fp32,pruned30-int8] [--questions 5] [--screenshot docs/web.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from pipeline import bench_home, build

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers import browser, question_wav_seconds, spoken_question_wav, start_gateway, until

QUESTIONS = ["Tell me a joke.", "What is pruning?", "Who are you?", "What is quantization?", "How does this work?"]


def measure(page: str, wav: Path, questions: int, screenshot: Path | None) -> dict:
    driver = browser(wav)
    offsets: list[float] = []
    try:
        driver.get(page)
        until(driver, "window.talk && talk.connected", 30)
        for i in range(questions):
            driver.execute_script(f"talk.ask({json.dumps(QUESTIONS[i % len(QUESTIONS)])})")
            until(driver, f"talk.firstFrameMs.length >= {i + 1}")
            for _ in range(10):  # during the reply
                time.sleep(0.2)
                if (o := driver.execute_script("return await talk.avOffsetMs()")) is not None:
                    offsets.append(o)
            if i == 0 and screenshot:
                time.sleep(0.5)
                driver.save_screenshot(str(screenshot))
            until(driver, "talk.sentences.length && talk.sentences[talk.sentences.length - 1].reply === talk.reply")
            time.sleep(4)  # let it finish speaking
        loop_ms = int(question_wav_seconds(wav) * 1000)
        driver.execute_script(f"talk.hold({2 * loop_ms})")  # two loops of the fake microphone hold one whole
        until(driver, f"talk.firstFrameMs.length >= {questions + 1}")
        typed = driver.execute_script("return talk.firstFrameMs")[:questions]
        spoken = driver.execute_script("return talk.firstFrameMs")[questions]
        heard = driver.execute_script("return talk.heard")
    finally:
        driver.quit()
    return {"typed_first_frame_ms": typed, "typed_p50_ms": float(np.median(typed)), "spoken_first_frame_ms": spoken,
            "heard": heard, "av_offset_ms": offsets,
            "av_offset_p50_ms": float(np.median(offsets)) if offsets else None,
            "av_offset_max_abs_ms": float(np.max(np.abs(offsets))) if offsets else None,
            "passthrough": True}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="fp32,pruned30-int8")
    ap.add_argument("--questions", type=int, default=5)
    ap.add_argument("--screenshot", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="build with the tests' short repair schedule")
    ap.add_argument("--out", type=Path, default=Path("bench-results"))
    args = ap.parse_args()
    from talkserve.server.serve import Ports, Server

    report = {}
    with bench_home() as (root, db):
        wav = spoken_question_wav(root / "question.wav", "Who are you?")
        for preset in args.presets.split(","):
            current = build(preset, root, db, args.quick)
            with Server(current, Ports.free(), log=root / f"triton-{preset}.log") as server:
                gateway, page = start_gateway(f"127.0.0.1:{server.ports.grpc}")
                try:
                    shot = args.screenshot if preset == args.presets.split(",")[0] else None
                    report[preset] = r = measure(page, wav, args.questions, shot)
                finally:
                    gateway.terminate()
                    gateway.wait(30)
            each = ", ".join(f"{t:.0f}" for t in r["typed_first_frame_ms"])
            print(f"{preset}: send → first frame painted p50 {r['typed_p50_ms']:.0f} ms over {args.questions} typed "
                  f"questions ({each}), spoken (from the end of the hold) {r['spoken_first_frame_ms']:.0f} ms, "
                  f"heard {r['heard']}; A/V offset p50 "
                  f"{r['av_offset_p50_ms']} ms, max |offset| {r['av_offset_max_abs_ms']} ms "
                  f"({len(r['av_offset_ms'])} samples)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "web.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
