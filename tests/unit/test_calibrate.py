"""The build's stream-limit calibration (talkserve.targets.calibrate): what counts as real time, and
how the stream count is stepped. The served run itself: tests/server/test_warp_server.py."""

from __future__ import annotations

import numpy as np
import pytest

from talkserve.recipe import Recipe
from talkserve.server.repository import BuildContext
from talkserve.targets.calibrate import count_holds, meets_real_time, step_streams
from talkserve.targets.cpu import check_inputs


def result(n: int, p95: float = 0.5, stalls: int = 0, admitted: int | None = None, errors=()) -> dict:
    return {"streams": n, "admitted": n if admitted is None else admitted, "stalls": stalls,
            "errors": list(errors), "ttfc_p95_s": p95}


def test_real_time_means_every_stream_admitted_none_stalled_no_error_and_first_chunk_in_bound():
    assert meets_real_time(result(2, p95=1.5))
    assert not meets_real_time(result(2, p95=1.51))
    assert meets_real_time(result(2, p95=1.9), first_chunk_p95_s=2.0)
    assert not meets_real_time(result(2, stalls=1))
    assert not meets_real_time(result(2, admitted=1))  # refused by a limit left in place
    assert not meets_real_time(result(2, errors=["deadline exceeded"]))


def test_stepping_runs_each_count_and_stops_after_the_first_that_misses():
    asked = []

    def run(n: int) -> dict:
        asked.append(n)
        return result(n, p95=0.4 * n)  # 1.2 s at 3 streams, 1.6 s at 4

    held, steps = step_streams(run, most=8)
    assert (held, asked) == (3, [1, 1, 2, 2, 3, 3, 4, 4]) and [s["try"] for s in steps] == [1, 2] * 4
    assert step_streams(lambda n: result(n, p95=0.4 * n), most=8, runs=1)[0] == 3


def test_a_stall_by_chance_does_not_fail_a_count_but_one_in_most_runs_does():
    runs = iter([result(1), result(1), result(2, stalls=1), result(2), result(3, stalls=1), result(3, stalls=2)])
    held, steps = step_streams(lambda n: next(runs), most=4)
    assert held == 2 and [(s["streams"], s["try"]) for s in steps] == [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2)]
    assert not count_holds([result(2, stalls=1), result(2), result(2, stalls=1)])  # 2 of 3 stalled


def test_an_error_or_a_refusal_in_any_run_fails_its_count():
    assert not count_holds([result(2), result(2, errors=["deadline exceeded"])])
    assert not count_holds([result(2, admitted=1), result(2)])


def test_a_count_is_judged_on_the_first_chunks_of_all_its_runs():
    def timed(n: int, ttfc: list[float]) -> dict:
        return {**result(n, p95=float(np.percentile(ttfc, 95))), "ttfc_s": ttfc}

    # 2 streams: late in one run (p95 ~2 s), on time in the other, late over both: a marginal count
    runs = iter([timed(1, [0.5]), timed(1, [0.5]), timed(2, [0.9, 2.0]), timed(2, [0.8, 0.9])])
    held, steps = step_streams(lambda n: next(runs), most=3)
    assert held == 1 and len(steps) == 4 and steps[-1]["pooled_ttfc_p95_s"] > 1.5 > steps[-1]["ttfc_p95_s"]
    # just over the bound in one run (p95 1.52 s), within it over both runs' first chunks (1.47 s): it holds
    runs = iter([timed(1, [0.5]), timed(1, [0.5]), timed(2, [1.0, 1.55]), timed(2, [0.5, 0.5])])
    held, steps = step_streams(lambda n: next(runs), most=2)
    assert held == 2 and steps[-1]["pooled_ttfc_p95_s"] == pytest.approx(1.4675)


def test_stepping_tries_no_more_than_asked_and_reports_none_when_one_stream_misses():
    assert step_streams(lambda n: result(n), most=2)[0] == 2
    held, steps = step_streams(lambda n: result(n, stalls=1), most=4, runs=3)
    assert held == 0 and len(steps) == 3


def test_each_run_is_reported_as_it_ends():
    seen = []
    step_streams(lambda n: result(n, p95=n), most=3, first_chunk_p95_s=1.0, on_step=seen.append)
    assert [(s["streams"], s["try"]) for s in seen] == [(1, 1), (1, 2), (2, 1), (2, 2)]


def test_a_gpu_build_without_a_stream_limit_fails_before_any_work(tmp_path):
    recipe = Recipe(name="gpu", target="gpu")
    with pytest.raises(ValueError, match=r"serving.max_streams is null.*cannot serve TensorRT engines"):
        check_inputs(tmp_path, recipe, BuildContext("b"))
    recipe.serving.max_streams = 3
    check_inputs(tmp_path, recipe, BuildContext("b"))  # the recipe's limit: nothing to measure


@pytest.mark.parametrize("max_streams, loops, expected", [(None, None, 5), (3, None, 4), (3, 2, 2)])
def test_generation_loops_follow_the_stream_limit_unless_the_recipe_sets_them(tmp_path, max_streams, loops, expected):
    from talkserve import spec
    from talkserve.server import repository as repo
    from talkserve.targets.cpu import capacity_step

    repo.write_python_model(tmp_path, spec.LLM, spec.LLMParams(  # as llm_step writes it
        kv_layout=spec.KVLayout(2, 2, 8, 32), max_new_tokens=8, max_new_tokens_limit=16, max_text_chars=100,
        max_history_turns=4, max_prompt_tokens=64, prefix_cache_mib=1.0), loops or 1)
    recipe = Recipe(name="r")
    recipe.serving.max_streams, recipe.llm.instances = max_streams, loops
    capacity_step(tmp_path, recipe, BuildContext("b"))  # null: provisional, calibration_streams (4) until measured
    assert repo.read_config(tmp_path / "llm").instance_group[0].count == expected
