"""Hub loaders on tiny local copies in each default dataset's own layout (no network)."""

from __future__ import annotations

import hashlib
import json

import pytest

from pst_distill.config.sections import parse
from pst_distill.config.base import ConfigError
from pst_distill.config.prepare import TaskSpec
from pst_distill.tasks.hub import HUB_TASKS, load_hub_task, read_hub_task
from pst_distill.config.prepare import HUB, TASK_NAMES


@pytest.fixture(autouse=True)
def _in_tmp_repo(tmp_path, monkeypatch):
    """data_files must lie under data/raw/ (relative to the repo root): run in tmp_path."""
    (tmp_path / "data" / "raw").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)


def _write_jsonl(tmp_path, name, rows):
    path = tmp_path / "data" / "raw" / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path.relative_to(tmp_path)


def _load(tmp_path, task, rows, n=10):
    path = _write_jsonl(tmp_path, task, rows)
    return load_hub_task(TaskSpec(name=task, source=HUB, data_files=str(path), n=n))


def _check(rec, task, question, answer, answer_type, rationale):
    assert rec["task"] == task
    assert rec["question"] == question
    assert rec["answer"] == answer
    assert rec["answer_type"] == answer_type
    assert rec["reference_rationale"] == rationale


def test_every_hub_task_has_a_table():
    assert set(HUB_TASKS) == {t for t, sources in TASK_NAMES.items() if HUB in sources}


def test_gsm8k(tmp_path):
    rows = [
        {
            "question": "Natalia sold clips to 48 of her friends in April, and then she sold half "
            "as many clips in May. How many clips did Natalia sell altogether in April and May?",
            "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
            "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
        },
        {
            "question": "Weng earns $12 an hour. How much for 50 minutes?",
            "answer": "12/60*50=10\n#### 10",
        },
    ]
    recs = _load(tmp_path, "gsm8k", rows)
    assert len(recs) == 2
    _check(
        recs[0], "gsm8k", rows[0]["question"], "72", "number",
        "Natalia sold 48/2 = 24 clips in May.\n"
        "Natalia sold 48+24 = 72 clips altogether in April and May.",
    )


def test_aqua(tmp_path):
    rows = [
        {
            "question": "Two friends plan to walk along a 43-km trail. What distance will the "
            "faster friend have walked?",
            "options": ["A)21", "B)21.5", "C)22", "D)22.5", "E)23"],
            "rationale": "If Q complete x kilometers...\nAnswer: E",
            "correct": "E",
        },
        {
            "question": "In the coordinate plane, points (x, 1) and (5, y) are on line k.",
            "options": ["A)3 and 1", "B)1 and 8", "C)5 and 8", "D)4 and 1", "E)2 and 1"],
            "rationale": "Line k passes through the origin.",
            "correct": "C",
        },
    ]
    recs = _load(tmp_path, "aqua", rows)
    _check(
        recs[0], "aqua",
        rows[0]["question"] + "\nAnswer Choices: (A) 21 (B) 21.5 (C) 22 (D) 22.5 (E) 23",
        "E", "choice", "If Q complete x kilometers...\nAnswer: E",
    )


def test_commonsense_qa_skips_unlabelled_rows(tmp_path):
    rows = [
        {
            "id": "075e483d21c29a511267ef62bedc0461",
            "question": "The sanctions against the school were a punishing blow, and they seemed "
            "to what the efforts the school had made to change?",
            "question_concept": "punishing",
            "choices": {
                "label": ["A", "B", "C", "D", "E"],
                "text": ["ignore", "enforce", "authoritarian", "yell at", "avoid"],
            },
            "answerKey": "A",
        },
        {
            "id": "90b30172e645ff91f7171a048582eb8b",
            "question": "What do people typically do while playing guitar?",
            "question_concept": "playing guitar",
            "choices": {
                "label": ["A", "B", "C", "D", "E"],
                "text": ["cry", "hear sounds", "singing", "arthritis", "making music"],
            },
            "answerKey": "",  # the hub's test split carries no labels
        },
    ]
    recs = _load(tmp_path, "commonsense_qa", rows)
    assert len(recs) == 1
    _check(
        recs[0], "commonsense_qa",
        rows[0]["question"]
        + "\nAnswer Choices: (A) ignore (B) enforce (C) authoritarian (D) yell at (E) avoid",
        "A", "choice", None,
    )


def test_date_understanding_keeps_option_f(tmp_path):
    rows = [
        {
            "input": "Today is Christmas Eve of 1937. What is the date 10 days ago in MM/DD/YYYY?\n"
            "Options:\n(A) 12/14/2026\n(B) 12/14/1950\n(C) 12/14/2007\n(D) 12/14/1937\n"
            "(E) 07/14/1938\n(F) 12/14/1988",
            "target": "(D)",
        },
        {
            "input": "Jane booked a flight for tomorrow, Jul 29, 2002. What is the date one week "
            "ago from today in MM/DD/YYYY?\nOptions:\n(A) 07/21/2002\n(B) 07/04/2002\n"
            "(C) 07/21/2053\n(D) 07/27/2002\n(E) 07/12/2002\n(F) 07/21/1934",
            "target": "(F)",
        },
    ]
    recs = _load(tmp_path, "date_understanding", rows)
    _check(
        recs[0], "date_understanding",
        "Today is Christmas Eve of 1937. What is the date 10 days ago in MM/DD/YYYY?\n"
        "Answer Choices: (A) 12/14/2026 (B) 12/14/1950 (C) 12/14/2007 (D) 12/14/1937 "
        "(E) 07/14/1938 (F) 12/14/1988",
        "D", "choice", None,
    )
    assert recs[1]["answer"] == "F"


def test_tracking_shuffled_objects(tmp_path):
    rows = [
        {
            "input": "Alice, Bob, and Claire are playing a game. At the start of the game, they "
            "are each holding a ball: Alice has a yellow ball, Bob has a blue ball, and Claire has "
            "a pink ball.\nAs the game progresses, pairs of players trade balls. First, Claire and "
            "Alice swap balls. Then, Alice and Bob swap balls. Finally, Claire and Bob swap balls. "
            "At the end of the game, Bob has the\nOptions:\n(A) yellow ball\n(B) blue ball\n"
            "(C) pink ball",
            "target": "(A)",
        }
    ]
    recs = _load(tmp_path, "tracking_shuffled_objects", rows)
    stem = rows[0]["input"].split("\nOptions:")[0]
    _check(
        recs[0], "tracking_shuffled_objects",
        stem + "\nAnswer Choices: (A) yellow ball (B) blue ball (C) pink ball",
        "A", "choice", None,
    )


def test_svamp(tmp_path):
    rows = [
        {
            "ID": "chal-777",
            "Body": "There are 87 oranges and 290 bananas in Philip's collection. "
            "If the bananas are organized into 2 groups and oranges are organized into 93 groups",
            "Question": "How big is each group of bananas?", "Equation": "( 290.0 / 2.0 )",
            "Answer": 145.0, "Type": "Common-Division",
            "question_concat": "There are 87 oranges ... How big is each group of bananas?",
        },
        {
            "ID": "chal-1", "Body": "Each pack of dvds costs 76 dollars.",
            "Question": "How much do you have to pay to buy each pack?",
            "Equation": "( 76.0 - 25.0 )",
            "Answer": 51.0, "Type": "Subtraction", "question_concat": "Each pack ...",
        },
    ]
    recs = _load(tmp_path, "svamp", rows)
    _check(
        recs[0], "svamp",
        "There are 87 oranges and 290 bananas in Philip's collection. If the bananas are organized "
        "into 2 groups and oranges are organized into 93 groups How big is each group of bananas?",
        "145", "number", None,
    )


def test_multiarith(tmp_path):
    rows = [
        {"question": " While shopping for music online, Zoe bought 3 country albums and 5 pop "
         "albums. Each album came with a lyric sheet and had 3 songs. How many songs did Zoe buy "
         "total? ", "final_ans": "24"},
        {"question": "A waiter had 14 customers. 3 left. How many are left?", "final_ans": "11"},
    ]
    recs = _load(tmp_path, "multiarith", rows)
    _check(recs[0], "multiarith", rows[0]["question"].strip(), "24", "number", None)


@pytest.mark.parametrize("task", ["single_eq", "addsub"])
def test_lila_tasks(tmp_path, task):
    rows = [
        {
            "input": "Joan found 70 seashells on the beach. She gave Sam some of her seashells. "
            "She has 27 seashells left. How many seashells did she give to Sam?",
            "output_program": "answer = 70 - 27\nprint(answer)",
            "output_answer": "43.0",
            "split": "train",
            "dataset": f"{task}.json",
        },
        {
            "input": "Sam had 9 dimes. He gave 7 to his dad. How many dimes does he have now?",
            "output_program": "print(9 - 7)", "output_answer": "2", "split": "test",
            "dataset": f"{task}.json",
        },
    ]
    recs = _load(tmp_path, task, rows)
    _check(recs[0], task, rows[0]["input"], "43", "number", None)
    assert recs[1]["answer"] == "2"


def test_strategy_qa_uses_facts_as_rationale(tmp_path):
    rows = [
        {
            "qid": "4fd64bb6ce5b78ab20b6", "term": "Mixed martial arts",
            "description": "full contact combat sport",
            "question": "Is Mixed martial arts totally original from Roman Colosseum games?",
            "answer": False,
            "facts": ["Mixed Martial arts in the UFC takes place in an enclosed structure called "
                      "The Octagon.", "The Roman Colosseum games were fought in enclosed areas."],
            "decomposition": ["Where does MMA take place?", "Where were Colosseum games fought?"],
        },
        {
            "qid": "5c6a9cb5f1e82aeb6bc4", "term": "Kane", "description": "American wrestler",
            "question": "Would Kane's wife be a good choice to host a wrestling show?",
            "answer": True, "facts": [], "decomposition": [],
        },
    ]
    recs = _load(tmp_path, "strategy_qa", rows)
    _check(
        recs[0], "strategy_qa", rows[0]["question"], "no", "yes-no",
        "Mixed Martial arts in the UFC takes place in an enclosed structure called The Octagon. "
        "The Roman Colosseum games were fought in enclosed areas.",
    )
    _check(recs[1], "strategy_qa", rows[1]["question"], "yes", "yes-no", None)


def test_last_letter_concatenation(tmp_path):
    rows = [
        {"question": 'Take the last letters of each words in "Whitney Erika Tj Benito" and '
         "concatenate them.", "answer": "yajo"},
        {"question": 'Take the last letters of each words in "Lucky Mireya Jj Kc" and '
         "concatenate them.", "answer": "yajc"},
    ]
    recs = _load(tmp_path, "last_letter_concatenation", rows)
    _check(recs[0], "last_letter_concatenation", rows[0]["question"], "yajo", "text", None)


def test_coin_flip_drops_prompt_scaffolding(tmp_path):
    rows = [
        {"inputs": "Q: A coin is heads up. sager does not flip the coin. zyheir flips the coin. "
         "Is the coin still heads up?", "targets": "no"},
        {"inputs": "Q: A coin is heads up. mailey does not flip the coin. maurisa does not flip "
         "the coin. Is the coin still heads up?", "targets": "yes"},
    ]
    recs = _load(tmp_path, "coin_flip", rows)
    _check(
        recs[0], "coin_flip",
        "A coin is heads up. sager does not flip the coin. zyheir flips the coin. "
        "Is the coin still heads up?",
        "no", "yes-no", None,
    )
    assert recs[1]["answer"] == "yes"


def test_n_caps_after_dedup_in_source_order(tmp_path):
    row = lambda q, a: {"question": q, "final_ans": a}  # noqa: E731
    rows = [row("1 + 1?", "2"), row("1 + 1?", "2"), row("2 + 2?", "4"), row("3 + 3?", "6")]
    recs = _load(tmp_path, "multiarith", rows, n=2)
    assert [r["question"] for r in recs] == ["1 + 1?", "2 + 2?"]
    assert len({r["id"] for r in recs}) == 2


def test_n_null_keeps_every_item(tmp_path):
    rows = [{"question": f"{i} + 1?", "final_ans": str(i + 1)} for i in range(150)]
    assert len(_load(tmp_path, "multiarith", rows, n=None)) == 150


def test_missing_field_names_task_field_and_present_fields(tmp_path):
    rows = [{"question": "How many?", "final_answer": "3"}]
    with pytest.raises(ValueError, match=r"multiarith.*'final_ans'.*final_answer, question"):
        _load(tmp_path, "multiarith", rows)


def test_parquet_data_files(tmp_path):
    pd = pytest.importorskip("pandas")
    path = "data/raw/gsm8k.parquet"
    pd.DataFrame(
        [{"question": "What is 6 times 7?", "answer": "6*7=<<6*7=42>>42\n#### 42"}]
    ).to_parquet(path)
    recs = load_hub_task(TaskSpec(name="gsm8k", source=HUB, data_files=path, n=5))
    _check(recs[0], "gsm8k", "What is 6 times 7?", "42", "number", "6*7=42")


def test_unknown_extension_is_rejected(tmp_path):
    path = tmp_path / "data" / "raw" / "rows.csv"
    path.write_text("question,answer\n")
    with pytest.raises(ValueError, match=r"\.json, \.jsonl or \.parquet"):
        load_hub_task(TaskSpec(name="gsm8k", source=HUB, data_files="data/raw/rows.csv"))


def test_hub_failure_points_to_data_files(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset_builder", offline)
    with pytest.raises(RuntimeError, match=r"'openai/gsm8k'.*data_files:"):
        load_hub_task(TaskSpec(name="gsm8k", source=HUB))


class FakeBuilder:
    """Stand-in for a datasets hub builder (the hub is unreachable here): the commit it
    resolved the revision to, and its splits."""

    def __init__(self, calls, dataset_id, config, revision=None):
        calls.append((dataset_id, config, revision))
        self.hash = "c0ffee" * 6 + "beef"  # what datasets resolves a branch/tag/None to

    def download_and_prepare(self):
        pass

    def as_dataset(self):
        return {"train": [{"question": "1 + 2?", "answer": "#### 3"}]}


def test_split_selection_and_missing_split(monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset_builder",
                        lambda *a, **k: FakeBuilder(calls, *a, **k))
    spec = TaskSpec(name="gsm8k", source=HUB, splits=["train"], dataset_id="me/gsm", revision="abc")
    assert [r["answer"] for r in load_hub_task(spec)] == ["3"]
    assert calls == [("me/gsm", "main", "abc")]
    with pytest.raises(ValueError, match=r"no split\(s\) test; available: train"):
        load_hub_task(TaskSpec(name="gsm8k", source=HUB, splits=["train", "test"]))
    with pytest.raises(ValueError, match=r"available: train, test"):
        load_hub_task(TaskSpec(name="gsm8k", source=HUB, splits=["validation"]))


def test_resolved_hub_revision_is_recorded(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset_builder",
                        lambda *a, **k: FakeBuilder([], *a, **k))
    _, origin = read_hub_task(TaskSpec(name="gsm8k", source=HUB, splits=["train"]))
    assert origin == {"source": "hub", "dataset_id": "openai/gsm8k", "config": "main",
                      "revision": "c0ffee" * 6 + "beef", "revision_requested": None,
                      "splits": ["train"]}


def test_local_file_revision_is_its_sha256(tmp_path):
    rows = [{"question": "What is 6 times 7?", "answer": "#### 42"}]
    path = _write_jsonl(tmp_path, "gsm8k", rows)
    spec = TaskSpec(name="gsm8k", source=HUB, data_files=str(path))
    digest = hashlib.sha256((tmp_path / path).read_bytes()).hexdigest()
    assert read_hub_task(spec)[1] == {"source": "hub", "data_files": "data/raw/gsm8k.jsonl",
                                      "revision": f"local:{digest}"}
    _write_jsonl(tmp_path, "gsm8k", rows * 2)  # same records, other bytes: another revision
    assert read_hub_task(spec)[1]["revision"] != f"local:{digest}"


@pytest.mark.parametrize("path", ["/tmp/gsm8k.jsonl", "gsm8k.jsonl", "data/raw/../gsm8k.jsonl",
                                  "data/rawish/gsm8k.jsonl", "data/prepared/train.jsonl"])
def test_data_files_outside_data_raw_is_refused(path):
    with pytest.raises(ConfigError, match=r"prepare\.tasks\.0\.data_files: must be a path "
                       r"under data/raw/.*dvc add data/raw/"):
        parse("prepare", {"tasks": [{"name": "gsm8k", "source": "hub",
                                             "data_files": path}]})
