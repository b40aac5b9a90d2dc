"""The LLM's held-out question set: big enough, scored by whole words, and never trained on."""

from __future__ import annotations

import re

from talkserve.compress.qa import QA, QUESTIONS, correct, score
from talkserve.compress.tasks.llm import WRITTEN_PROMPTS, distill_prompts
from talkserve.models.corpus import conversations, pairs


def norm(text: str) -> str:
    return re.sub(r"[^\w ]", "", text.lower()).strip()


def test_the_set_has_a_hundred_distinct_questions_each_with_an_answer():
    assert len(QUESTIONS) >= 100
    assert len({norm(q.question) for q in QUESTIONS}) == len(QUESTIONS)
    assert all(q.answers and all(a == a.lower() for a in q.answers) for q in QUESTIONS)


def test_no_question_is_in_any_training_distillation_or_calibration_data():
    held = {norm(q.question) for q in QUESTIONS}
    seen = {
        "starter corpus": {norm(q) for q, _ in pairs()},
        "starter conversations": {norm(t["content"]) for c in conversations() for t in c if t["role"] == "user"},
        # the LLM's distillation prompts are also its INT8 calibration decoding steps (LLMTask)
        "distillation prompts": {norm(p) for p in [*distill_prompts(), *WRITTEN_PROMPTS]},
    }
    for name, questions in seen.items():
        assert not held & questions, f"QA questions in the {name}: {sorted(held & questions)}"


def test_a_reply_scores_on_a_whole_word_answer_only():
    paris = QA("What is the capital of France?", ("paris",))
    assert correct("It's Paris, of course.", paris) and correct("PARIS!", paris)
    assert not correct("The Parisian cafés are lovely.", paris) and not correct("I don't know.", paris)
    half, verdicts = score(lambda q: "Paris" if "France" in q else "no idea", (paris, QA("2+2?", ("4", "four"))))
    assert half == 50.0 and verdicts == [True, False]
