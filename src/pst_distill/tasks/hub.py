"""Fine-tune-CoT's 12 tasks, loaded with ``datasets`` from the hub or from a local copy.

Each task has one small table: the default dataset id, config, the splits worth reading,
and a function from a raw row to ``(question, answer, answer_type, reference_rationale)``.
``spec.data_files`` swaps the hub for a local json/jsonl/parquet file in the same layout,
kept under ``data/raw/`` (a DVC dep of prepare_data).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

from pst_distill.parsing import INVALID, normalize
from pst_distill.tasks.records import make_record

__all__ = ["HUB_TASKS", "HubSource", "load_hub_task", "read_hub_task"]
log = logging.getLogger(__name__)

Mapped = tuple[str, str, str, Optional[str]]  # question, answer, answer_type, rationale


class HubSource(NamedTuple):
    dataset_id: str
    config: Optional[str]
    splits: tuple[str, ...]
    map_row: Callable[[dict, str], Mapped]


# ------------------------------------------------------------------ row helpers
def _get(row: dict, field: str, task: str) -> Any:
    if field not in row:
        raise ValueError(
            f"{task}: row has no field {field!r}; fields present: {', '.join(sorted(row))}"
        )
    return row[field]


def _letter(value: Any, labels: Optional[list[str]] = None) -> str:
    """'(D)', 'D', ' d ' -> 'D'. Not parsing.normalize: BBH options run to (F) and beyond."""
    m = re.fullmatch(r"\s*\(?([A-Za-z])\)?\s*", str(value))
    letter = m.group(1).upper() if m else INVALID
    return letter if labels is None or letter in labels else INVALID


def _with_choices(stem: str, choices: list[tuple[str, str]]) -> str:
    listed = " ".join(f"({label}) {text.strip()}" for label, text in choices)
    return f"{stem.strip()}\nAnswer Choices: {listed}"


# ------------------------------------------------------------------ row mappers
def _gsm8k(row: dict, task: str) -> Mapped:
    # openai/gsm8k (config main): {question, answer: "<worked solution>\n#### 72"}
    solution, sep, final = str(_get(row, "answer", task)).rpartition("####")
    if not sep:
        return _get(row, "question", task), INVALID, "number", None
    # <<48/2=24>> are calculator annotations, not part of the written reasoning
    rationale = re.sub(r"<<[^>]*>>", "", solution).strip() or None
    return _get(row, "question", task), normalize(final, "number"), "number", rationale


def _aqua(row: dict, task: str) -> Mapped:
    # deepmind/aqua_rat (config raw): {question, options: ["A)21", ...], rationale, correct: "A"}
    choices = []
    for option in _get(row, "options", task):
        m = re.match(r"\s*\(?([A-Z])\)\s*(.*)", str(option), flags=re.S)
        if m:
            choices.append((m.group(1), m.group(2)))
    question = _with_choices(_get(row, "question", task), choices)
    answer = _letter(_get(row, "correct", task), [c[0] for c in choices])
    rationale = str(_get(row, "rationale", task)).strip() or None
    return question, answer, "choice", rationale


def _commonsense_qa(row: dict, task: str) -> Mapped:
    # tau/commonsense_qa: {id, question, question_concept,
    #   choices: {label: ["A".."E"], text: [...]}, answerKey: "A" ("" on the test split)}
    choices = _get(row, "choices", task)
    pairs = list(zip(choices["label"], choices["text"]))
    question = _with_choices(_get(row, "question", task), pairs)
    return question, _letter(_get(row, "answerKey", task), [p[0] for p in pairs]), "choice", None


def _bbh(row: dict, task: str) -> Mapped:
    # lukaemon/bbh (one config per task): {input: "<stem>\nOptions:\n(A) ...\n(B) ...",
    #   target: "(A)"}
    text = str(_get(row, "input", task))
    stem, sep, options = text.partition("Options:")
    if not sep:
        raise ValueError(f"{task}: input has no 'Options:' block: {text[:80]!r}")
    choices = re.findall(r"\(([A-Z])\)\s*([^\n]*)", options)
    answer = _letter(_get(row, "target", task), [c[0] for c in choices])
    return _with_choices(stem, choices), answer, "choice", None


def _svamp(row: dict, task: str) -> Mapped:
    # ChilleD/SVAMP: {ID, Body, Question, Equation, Answer: float, Type, question_concat}
    question = f"{str(_get(row, 'Body', task)).strip()} {str(_get(row, 'Question', task)).strip()}"
    return question, normalize(str(_get(row, "Answer", task)), "number"), "number", None


def _multiarith(row: dict, task: str) -> Mapped:
    # ChilleD/MultiArith: {question, final_ans: "18"}
    answer = normalize(str(_get(row, "final_ans", task)), "number")
    return _get(row, "question", task), answer, "number", None


def _lila(row: dict, task: str) -> Mapped:
    # allenai/lila (configs addsub, singleq): {input, output_program, output_answer, split,
    #   dataset}. output_program is Python code, not a written rationale.
    answer = normalize(str(_get(row, "output_answer", task)), "number")
    return _get(row, "input", task), answer, "number", None


def _strategy_qa(row: dict, task: str) -> Mapped:
    # ChilleD/StrategyQA: {qid, term, description, question, answer: bool, facts, decomposition}
    answer = normalize(str(_get(row, "answer", task)), "yes-no")  # True/False -> yes/no
    facts = row.get("facts") or ""  # optional: some copies ship without the facts
    if isinstance(facts, (list, tuple)):
        facts = " ".join(str(f).strip() for f in facts)
    return _get(row, "question", task), answer, "yes-no", str(facts).strip() or None


def _last_letter(row: dict, task: str) -> Mapped:
    # ChilleD/LastLetterConcat: {question: 'Take the last letters of ... "A B".', answer: "ab"}
    answer = normalize(str(_get(row, "answer", task)), "text")
    return _get(row, "question", task), answer, "text", None


def _coin_flip(row: dict, task: str) -> Mapped:
    # skrishna/coin_flip: {inputs: "Q: A coin is heads up. ... Is the coin still heads up?",
    #   targets: "yes" | "no"}; the "Q:" / "A:" prompt scaffolding is dropped
    question = re.sub(r"^\s*Q:\s*|\s*A:\s*$", "", str(_get(row, "inputs", task)))
    return question, normalize(str(_get(row, "targets", task)), "yes-no"), "yes-no", None


HUB_TASKS: dict[str, HubSource] = {
    "single_eq": HubSource("allenai/lila", "singleq", ("train", "validation", "test"), _lila),
    "addsub": HubSource("allenai/lila", "addsub", ("train", "validation", "test"), _lila),
    "multiarith": HubSource("ChilleD/MultiArith", None, ("train", "test"), _multiarith),
    "gsm8k": HubSource("openai/gsm8k", "main", ("train", "test"), _gsm8k),
    "aqua": HubSource("deepmind/aqua_rat", "raw", ("train", "validation", "test"), _aqua),
    "svamp": HubSource("ChilleD/SVAMP", None, ("train", "test"), _svamp),
    "date_understanding": HubSource("lukaemon/bbh", "date_understanding", ("test",), _bbh),
    "tracking_shuffled_objects": HubSource(
        "lukaemon/bbh", "tracking_shuffled_objects_three_objects", ("test",), _bbh
    ),
    "coin_flip": HubSource("skrishna/coin_flip", None, ("train", "validation", "test"), _coin_flip),
    "last_letter_concatenation": HubSource(
        "ChilleD/LastLetterConcat", None, ("train", "test"), _last_letter
    ),
    # the test split's answerKey is empty, so only the labelled splits are read
    "commonsense_qa": HubSource(
        "tau/commonsense_qa", None, ("train", "validation"), _commonsense_qa
    ),
    "strategy_qa": HubSource("ChilleD/StrategyQA", None, ("train", "test"), _strategy_qa),
}


# ------------------------------------------------------------------ loading
def _wanted_splits(spec, source: HubSource) -> list[str]:
    wanted = [s for s in spec.splits if s in source.splits]
    if not wanted:
        raise ValueError(
            f"{spec.name}: none of splits {list(spec.splits)} is read for this task; "
            f"available: {', '.join(source.splits)}"
        )
    return wanted


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_local(spec) -> tuple[list, dict]:
    import datasets

    path = Path(spec.data_files)
    suffix = path.suffix.lower()
    builder = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}.get(suffix)
    if builder is None:
        raise ValueError(f"{spec.name}: data_files {str(path)!r} must be .json, .jsonl or .parquet")
    if not path.is_file():
        raise FileNotFoundError(
            f"{spec.name}: data_files {str(path)!r} not found (tracked with `dvc add`? then "
            f"`dvc pull {path}.dvc` fetches it)")
    # one local file is the whole data: ``datasets`` names its only split "train"
    log.info("%s: loading local %s (splits %s do not apply)", spec.name, path, list(spec.splits))
    # hashed before loading: a file replaced mid-run is recorded as what was read, or older
    origin = {"data_files": str(path), "revision": f"local:{file_sha256(path)}"}
    return [datasets.load_dataset(builder, data_files=str(path), split="train")], origin


def _load_hub(spec, source: HubSource) -> tuple[list, dict]:
    import datasets

    dataset_id = spec.dataset_id or source.dataset_id
    config = spec.dataset_config or source.config
    wanted = _wanted_splits(spec, source)
    log.info("%s: loading %s (config %s, revision %s)", spec.name, dataset_id, config,
             spec.revision)
    try:
        # the builder resolves the revision to the commit it reads: that commit is recorded
        builder = datasets.load_dataset_builder(dataset_id, config, revision=spec.revision)
        builder.download_and_prepare()
        loaded = builder.as_dataset()
    except Exception as exc:  # network, auth, missing repo: all end the same way for the user
        raise RuntimeError(
            f"{spec.name}: could not load dataset {dataset_id!r} (config {config!r}, revision "
            f"{spec.revision!r}): {type(exc).__name__}: {exc}. Without hub access, put a local "
            f"json/jsonl/parquet copy in the same format under data/raw/, `dvc add` it and set "
            f"`data_files:` on this task to its path."
        ) from exc
    resolved = getattr(builder, "hash", None) or spec.revision
    if spec.revision is None or spec.revision != resolved:
        log.warning("%s: revision %s resolved to commit %s; set `revision: %s` on this task to "
                    "pin it", spec.name, spec.revision, resolved, resolved)
    missing = [s for s in wanted if s not in loaded]
    if missing:
        raise ValueError(
            f"{spec.name}: dataset {dataset_id!r} has no split(s) {', '.join(missing)}; "
            f"available: {', '.join(loaded)}"
        )
    origin = {"dataset_id": dataset_id, "config": config, "revision": resolved,
              "revision_requested": spec.revision, "splits": wanted}
    return [loaded[s] for s in wanted], origin


def load_hub_task(spec) -> list[dict]:
    """Records of one hub task, de-duplicated by id, the first ``spec.n`` in source order
    (all of them when ``spec.n`` is None)."""
    return read_hub_task(spec)[0]


def read_hub_task(spec) -> tuple[list[dict], dict]:
    """``(records, origin)``: the records of :func:`load_hub_task` and where they came from.

    ``origin["revision"]`` is the dataset commit that was read (resolved by ``datasets``
    when ``revision`` is a branch, a tag or unset), or ``local:<sha256>`` of ``data_files``.
    """
    if spec.name not in HUB_TASKS:
        raise ValueError(f"task {spec.name!r} has no hub source; hub tasks: {', '.join(HUB_TASKS)}")
    source = HUB_TASKS[spec.name]
    parts, origin = _load_local(spec) if spec.data_files else _load_hub(spec, source)
    cap = math.inf if spec.n is None else spec.n
    records: dict[str, dict] = {}
    skipped = 0
    for part in parts:
        for row in part:
            question, answer, answer_type, rationale = source.map_row(dict(row), spec.name)
            if answer == INVALID:  # unlabelled or unreadable gold answer: unusable
                skipped += 1
                continue
            rec = make_record(
                spec.name, question, answer, answer_type, reference_rationale=rationale
            )
            records.setdefault(rec["id"], rec)
            if len(records) >= cap:
                break
        if len(records) >= cap:
            break
    if skipped:
        log.warning("%s: skipped %d rows without a readable answer", spec.name, skipped)
    if len(records) < cap:
        log.info("%s: %d unique items (n=%s asked)", spec.name, len(records), spec.n)
    return list(records.values()), {"source": "hub", **origin}
