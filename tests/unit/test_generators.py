"""Exact records of each offline generator for a fixed seed, and the id-hash split."""

import pytest

from pst_distill.config import TaskSpec
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


@pytest.mark.parametrize("name", ["last_letter_concatenation", "coin_flip", "multistep_arithmetic"])
def test_generators_are_seeded_and_answers_check_out(name):
    spec = TaskSpec(name=name, n=40)
    a, b = build_task(spec, seed=1), build_task(spec, seed=1)
    assert a == b and len(a) == 40
    assert build_task(spec, seed=2) != a
    assert len({r["id"] for r in a}) == 40
    for rec in a:
        assert rec["answer"] in rec["reference_rationale"] or name == "coin_flip"


def test_arithmetic_answers_are_right():
    for rec in build_task(TaskSpec(name="multistep_arithmetic", n=50, options={"steps": 3}), seed=3):
        last = rec["reference_rationale"].split("=")[-1].split(".")[0].strip()
        assert last == rec["answer"] and int(rec["answer"]) >= 0


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
