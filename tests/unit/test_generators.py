"""Exact records of each offline generator for a fixed seed, answers checked against an
independent solution parsed from the question text, and the id-hash split."""

import re

import pytest

from pst_distill.config.prepare import TaskSpec
from pst_distill.tasks import build_task, split_records
from pst_distill.tasks.records import is_test, make_record

SEED = 7


def first(name, **options):
    return build_task(TaskSpec(name=name, n=3, options=options), seed=SEED)[0]


def test_last_letter_exact():
    assert first("last_letter_concatenation", k=2) == {
        "id": "018fd9676a8b0983",
        "task": "last_letter_concatenation",
        "question": 'Take the last letters of each word in "Frances Felix" and concatenate them.',
        "answer": "sx",
        "answer_type": "text",
        "reference_rationale": 'The last letter of "Frances" is "s". The last letter of "Felix" is "x". '
                               'Concatenating them gives "sx".',
    }


def test_coin_flip_exact():
    assert first("coin_flip", k=3) == {
        "id": "71d2c1482682b551",
        "task": "coin_flip",
        "question": "A coin is heads up. Radia does not flip the coin. Chen flips the coin. "
                    "Edsger does not flip the coin. Is the coin still heads up?",
        "answer": "no",
        "answer_type": "yes-no",
        "reference_rationale": "The coin starts heads up. Radia does not flip it, so it stays heads up. "
                               "Chen flips it, so it is now tails up. Edsger does not flip it, so it stays "
                               "tails up. The coin was flipped 1 time, an odd number, so it is tails up.",
    }


def test_multistep_arithmetic_exact():
    assert first("multistep_arithmetic", steps=2, max_value=20) == {
        "id": "70161e608ff659f7",
        "task": "multistep_arithmetic",
        "question": "Arjun has 3 shells. Arjun then quadruples the number of shells. Arjun then doubles "
                    "the number of shells. How many shells does Arjun have now?",
        "answer": "24",
        "answer_type": "number",
        "reference_rationale": "Arjun starts with 3 shells. After that there are 4 times as many: 3 * 4 = 12. "
                               "After that there are 2 times as many: 12 * 2 = 24. So Arjun has 24 shells.",
    }


def test_gsm_symbolic_exact():
    rec = first("gsm_symbolic")
    assert rec["id"] == "c093be1a0cf0811f"
    assert rec["answer"] == "1630" and rec["answer_type"] == "number"
    assert rec["question"].startswith("Sophia went to the bakery")
    assert rec["reference_rationale"].endswith("$130 + $420 + $1080 = $1630.")
    assert "####" not in rec["reference_rationale"]


def solve_last_letter(question: str) -> str:
    phrase = re.fullmatch(r'Take the last letters of each word in "([^"]+)" and concatenate them\.',
                          question).group(1)
    return "".join(word[-1] for word in phrase.split())


def solve_coin_flip(question: str) -> str:
    story = question.removeprefix("A coin is heads up. ").removesuffix(" Is the coin still heads up?")
    acts = re.findall(r"[A-Z][a-z]+ (flips|does not flip) the coin\.", story)
    assert acts and len(acts) == story.count("."), f"unparsed story: {question}"
    return "yes" if acts.count("flips") % 2 == 0 else "no"


TIMES = {"doubles": 2, "triples": 3, "quadruples": 4}


def solve_arithmetic(question: str) -> str:
    """Replay the story sentence by sentence; any sentence not understood fails the test."""
    *story, ask = re.split(r"(?<=[.?]) ", question)
    assert ask.startswith("How many") and ask.endswith("have now?"), question
    value = None
    for sentence in story:
        if m := re.fullmatch(r"[A-Z][a-z]+ has (\d+) [a-z]+\.", sentence):
            assert value is None, question
            value = int(m.group(1))
        elif m := re.fullmatch(r"[A-Z][a-z]+ gets (\d+) more\.", sentence):
            value += int(m.group(1))
        elif m := re.fullmatch(r"[A-Z][a-z]+ gives away (\d+)\.", sentence):
            value -= int(m.group(1))
        elif m := re.fullmatch(r"[A-Z][a-z]+ then (\w+) the number of [a-z]+\.", sentence):
            value *= TIMES[m.group(1)]
        else:
            raise AssertionError(f"sentence not understood: {sentence!r}")
    return str(value)


SOLVERS = {"last_letter_concatenation": solve_last_letter, "coin_flip": solve_coin_flip,
           "multistep_arithmetic": solve_arithmetic}


@pytest.mark.parametrize("name, options", [
    ("last_letter_concatenation", {}), ("last_letter_concatenation", {"k": 5}),
    ("coin_flip", {}), ("coin_flip", {"k": 9}),
    ("multistep_arithmetic", {}), ("multistep_arithmetic", {"steps": 5, "max_value": 9}),
])
def test_answers_match_an_independent_solution_of_the_question(name, options):
    recs = build_task(TaskSpec(name=name, n=60, options=options), seed=1)
    assert [rec["answer"] for rec in recs] == [SOLVERS[name](rec["question"]) for rec in recs]
    assert all(rec["answer"] in rec["reference_rationale"] for rec in recs if name != "coin_flip")
    if name == "coin_flip":  # both answers occur, so a constant answer cannot pass
        assert {rec["answer"] for rec in recs} == {"yes", "no"}


def test_coin_flip_rationale_counts_the_flips_of_the_question():
    for rec in build_task(TaskSpec(name="coin_flip", n=60), seed=2):
        flips = rec["question"].count(" flips the coin.")
        side = "heads" if flips % 2 == 0 else "tails"
        assert rec["reference_rationale"].endswith(f"flipped {flips} time{'s' * (flips != 1)}, an "
                                                   f"{'odd' if flips % 2 else 'even'} number, "
                                                   f"so it is {side} up.")


@pytest.mark.parametrize("name", ["last_letter_concatenation", "coin_flip", "multistep_arithmetic"])
def test_generators_are_seeded(name):
    spec = TaskSpec(name=name, n=40)
    a, b = build_task(spec, seed=1), build_task(spec, seed=1)
    assert a == b and len(a) == 40
    assert build_task(spec, seed=2) != a
    assert len({r["id"] for r in a}) == 40


def test_arithmetic_answers_are_right():
    for rec in build_task(TaskSpec(name="multistep_arithmetic", n=50, options={"steps": 3}), seed=3):
        last = rec["reference_rationale"].split("=")[-1].split(".")[0].strip()
        assert last == rec["answer"] == solve_arithmetic(rec["question"])
        assert int(rec["answer"]) >= 0


def test_split_is_by_id_and_order_free():
    recs = build_task(TaskSpec(name="coin_flip", n=200), seed=0)
    train, test = split_records(recs, 0.25)
    train2, test2 = split_records(list(reversed(recs)), 0.25)
    assert {r["id"] for r in test} == {r["id"] for r in test2}
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    assert 25 <= len(test) <= 75
    assert all(is_test(r["id"], 0.25) for r in test)


def test_record_id_is_content_hash():
    a = make_record("t", "q?", "1", "number")
    assert a["id"] == make_record("t", " q? ", "1", "number")["id"]
    assert a["id"] != make_record("t", "q?", "2", "number")["id"]
    with pytest.raises(ValueError, match="answer_type"):
        make_record("t", "q", "1", "float")
