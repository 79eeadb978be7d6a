"""Assembly rows, semantic targets, the per-task cap, rationale corruption and the assemble config."""

from __future__ import annotations

import json
import re

import pytest

from pst_distill.assemble.build import assemble, build_rows, build_targets, cap_per_task, write_datasets
from pst_distill.config.sections import parse
from pst_distill.config.assemble import AssembleConfig
from pst_distill.config.base import ConfigError
from pst_distill.config.common import FormatConfig
from pst_distill.assemble.corrupt import NUMBER, corrupt_records, shift_numbers, swap_entities
from pst_distill.methods import METHODS
from pst_distill.io import content_hash, read_jsonl

FMT = FormatConfig()
NAMES = ["Ada", "Bram", "Chen", "Dora", "Emil", "Fumi", "Gus", "Hana"]


def _record(task: str, i: int, sample: int = 0) -> dict:
    a, b = NAMES[i % 8], NAMES[(i + 3) % 8]
    if task == "arith":
        q, r, ans = f"{a} has {i} pens. {a} gets 3 more. How many?", f"{i} + 3 = {i + 3}.", str(i + 3)
    elif task == "letters":
        q = f'Concatenate the last letters of "{a} {b}".'
        r, ans = f'The last letter of "{a}" is "{a[-1]}". Of "{b}" it is "{b[-1]}".', a[-1] + b[-1]
    else:
        q, r, ans = f"A coin is up. {a} flips it. {b} flips it. Is it up?", f"{a} flips, {b} flips.", "yes"
    return {"id": content_hash(task, i), "key": content_hash(task, i, sample), "task": task,
            "question": q, "answer": ans, "answer_type": "text", "rationale": r, "sample": sample}


def _records(n_per_task: int = 20, tasks=("arith", "letters", "coin")) -> list[dict]:
    return [_record(t, i) for t in tasks for i in range(1, n_per_task + 1)]


def _cfg(**kw) -> AssembleConfig:
    return AssembleConfig(**kw)


def _targets_by_key(targets):
    return {t["key"]: t for t in targets}


# ------------------------------------------------------------------ rows
def test_rows_per_method_exact():
    rec = _record("arith", 45)
    rows = {m: build_rows(rec, m, FMT, emb_row=7) for m in METHODS}  # emb_key: its own key
    joined = {m: ["".join(s["text"] for s in row["segments"]) for row in rs] for m, rs in rows.items()}
    q, rs = rec["question"], "Reasoning: 45 + 3 = 48."
    assert joined == {
        "answer_only": [q + "Answer: 48"],
        "pre_thinking": [q + rs + "\nAnswer: 48"],
        "step_by_step": ["predict: " + q + "Answer: 48", "explain: " + q + rs],
        "post_thinking": [q + "Answer: 48\n" + rs],
        "pst": [q + "Answer: 48\n[SEM]" + rs],
        "adaptive": [q + "[FAST]Answer: 48\n[SEM]" + rs, q + "[THINK]" + rs + "\nAnswer: 48"],
    }
    assert [r["emb_row"] for r in rows["adaptive"]] == [7, None]  # the think half has no target
    assert [r["emb_row"] for r in rows["step_by_step"]] == [None, 7]
    assert rows["answer_only"][0]["emb_row"] is None
    assert rows["pst"][0]["emb_row"] == 7
    assert [r["emb_key"] for r in rows["step_by_step"]] == [None, rec["key"]]
    assert rows["answer_only"][0]["emb_key"] is None
    assert set(rows["pst"][0]) == {"id", "key", "task", "method", "answer", "answer_type",
                                   "corrupted", "emb_key", "emb_row", "segments"}


def test_assemble_counts_and_methods_subset():
    recs = _records(5)
    data, targets, stats, _ = assemble(recs, _cfg(methods=["pst", "step_by_step"]), FMT, 0)
    assert set(data) == {"pst", "step_by_step"}
    assert stats["methods"]["pst"]["rows"] == 15 and stats["methods"]["step_by_step"]["rows"] == 30
    assert [r["emb_row"] for r in data["pst"]] == list(range(15))
    assert stats["corrupted"] == 0 and stats["semantic_target"] == "seen"
    # without corruption: one target per item, its own key and rationale, in item order
    assert targets == [{"key": r["key"], "task": r["task"], "corrupted": False,
                        "rationale": r["rationale"]} for r in recs]


def test_targets_do_not_depend_on_methods():
    recs = _records(3)
    _, only_answers, _, _ = assemble(recs, _cfg(methods=["answer_only"]), FMT, 0)
    _, all_methods, _, _ = assemble(recs, _cfg(), FMT, 0)
    assert only_answers == all_methods and len(all_methods) == len(recs)


def test_a_target_key_naming_two_texts_raises():
    recs = _records(2, tasks=("arith",))
    items = [{**recs[0], "corrupted": True, "donor_key": recs[1]["key"], "rationale": "other"},
             {**recs[1], "corrupted": False}]
    with pytest.raises(ValueError, match="two different texts"):
        build_targets(items, {r["key"]: r["rationale"] for r in recs}, "seen", "shuffle")


def test_cap_per_task_by_id_hash_keeps_all_samples():
    recs = _records(10) + [_record("arith", 1, sample=1), _record("arith", 2, sample=1)]
    kept = cap_per_task(recs, 4)
    assert cap_per_task(list(reversed(recs)), 4) == list(reversed(kept))  # order-independent
    ids = {r["id"] for r in kept}
    assert len(ids) == 12 and all(r["id"] in ids for r in recs if r["id"] in ids)
    arith = sorted({r["id"] for r in recs if r["task"] == "arith"}, key=lambda i: content_hash("cap", i))
    assert {r["id"] for r in kept if r["task"] == "arith"} == set(arith[:4])
    assert cap_per_task(recs, None) == recs


def test_write_datasets_removes_stale_methods(tmp_path):
    (tmp_path / "answer_only.jsonl").write_text("{}\n")
    paths = write_datasets(tmp_path, {"pst": [{"a": 1}]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pst.jsonl"]
    assert read_jsonl(paths["pst"]) == [{"a": 1}]


# ------------------------------------------------------------- corruption
@pytest.mark.parametrize("mode", ["numbers", "swap", "shuffle"])
def test_corruption_fraction_and_determinism(mode):
    tasks = ("arith",) if mode == "numbers" else ("arith", "letters", "coin")
    recs = _records(20, tasks)
    out, stats = corrupt_records(recs, 0.25, mode, seed=3)
    again, _ = corrupt_records(recs, 0.25, mode, seed=3)
    other, _ = corrupt_records(recs, 0.25, mode, seed=4)
    hit = [o["key"] for o in out if o["corrupted"]]
    assert len(hit) == stats["corrupted"] == stats["requested"] == round(0.25 * len(recs))
    assert out == again
    assert hit != [o["key"] for o in other if o["corrupted"]]
    for rec, o in zip(recs, out):
        assert (o["rationale"] != rec["rationale"]) == o["corrupted"]
        assert o["question"] == rec["question"] and o["answer"] == rec["answer"]
    assert recs == _records(20, tasks)  # inputs untouched


def test_corrupted_identically_for_all_methods():
    recs = _records(10)
    data, _, stats, _ = assemble(recs, _cfg(corrupt_frac=0.5, corrupt_mode="swap"), FMT, 1)
    rationale = {m: {r["key"]: r["segments"][-1]["text"] for r in rows if r["segments"][-1]["kind"] == "rationale"}
                 for m, rows in data.items()}
    assert rationale["pst"] == rationale["post_thinking"] == rationale["step_by_step"]
    flagged = {m: {r["key"] for r in rows if r["corrupted"]} for m, rows in data.items()}
    # adaptive leaves its held-out questions out (assemble.holdout_per_task), the rest alike
    assert all(f == flagged["pst"] for m, f in flagged.items() if m != "adaptive")
    assert flagged["adaptive"] <= flagged["pst"] and len(flagged["pst"]) == 15
    assert stats["corrupted"] == 15


def test_numbers_changes_every_number():
    out = shift_numbers("45 + 8 = 53. Then 1,200 and 2.5 and x2.", __import__("random").Random(0))
    before, after = ["45", "8", "53", "1200", "2.5"], [m.replace(",", "") for m in NUMBER.findall(out)]
    assert len(after) == 5 and all(a != b for a, b in zip(before, after)) and "x2" in out
    assert all(abs(float(a) - float(b)) <= 3 and float(a) >= 0 for a, b in zip(after, before))


def test_swap_exchanges_two_entities():
    import random

    text = 'The last letter of "Ada" is "a". The last letter of "Bo" is "o".'
    out = swap_entities(text, "q", random.Random(0))
    assert out != text and sorted(re.findall(r'"[^"]+"', out)) == sorted(re.findall(r'"[^"]+"', text))
    names = swap_entities("Ada flips it. Bram does not. The end.", "Ada and Bram flip?", random.Random(0))
    assert names == "Bram flips it. Ada does not. The end."
    assert swap_entities("ok", "q", random.Random(0)) is None


def test_shuffle_uses_donor_rationale_and_embedding():
    recs = _records(10)
    data, targets, _, _ = assemble(recs, _cfg(corrupt_frac=0.3, corrupt_mode="shuffle"), FMT, 0)
    by_key = {r["key"]: r for r in recs}
    assert sum(r["corrupted"] for r in data["pst"]) == 9
    for row in data["pst"]:
        rec = by_key[row["key"]]
        assert targets[row["emb_row"]]["key"] == row["emb_key"]
        if not row["corrupted"]:
            assert row["emb_key"] == row["key"]
            continue
        donor = by_key[row["emb_key"]]  # the donor's own generation key: no new text
        assert donor["task"] == rec["task"] and donor["id"] != rec["id"]
        assert row["segments"][-1]["text"] == "Reasoning: " + donor["rationale"]
    assert len(targets) == len({t["key"] for t in targets})


def _rationale_segment(row) -> str:
    (text,) = [s["text"] for s in row["segments"] if s["kind"] == "rationale"]
    prefix = FMT.rationale_prefix + " "
    assert text.startswith(prefix)
    return text[len(prefix):].rstrip("\n")


@pytest.mark.parametrize("mode", ["numbers", "swap", "shuffle"])
def test_seen_target_is_the_rationale_the_row_shows(mode):
    recs = _records(10)
    data, targets, stats, _ = assemble(recs, _cfg(corrupt_frac=0.5, corrupt_mode=mode), FMT, 0)
    by_key = _targets_by_key(targets)
    n = stats["corrupted"]  # numbers: only the 10 arithmetic rationales have numbers
    assert stats["semantic_target"] == "seen" and n == (10 if mode == "numbers" else 15)
    for method in ("pst", "post_thinking", "pre_thinking", "step_by_step"):
        rows = [r for r in data[method] if r["emb_key"]]
        assert len(rows) == len(recs) and sum(r["corrupted"] for r in rows) == n
        for row in rows:
            assert targets[row["emb_row"]] is by_key[row["emb_key"]]
            assert by_key[row["emb_key"]]["rationale"] == _rationale_segment(row), method
    corrupted = [r for r in data["pst"] if r["corrupted"]]
    assert all(r["emb_key"] != r["key"] for r in corrupted)  # not the clean target
    if mode != "shuffle":  # a new text each, keyed by content; clean ones unused are left out
        assert stats["corrupted_targets"] == n == sum(t["corrupted"] for t in targets)
        assert len(targets) == len(recs)
    else:
        assert stats["corrupted_targets"] == 0


@pytest.mark.parametrize("mode", ["numbers", "swap", "shuffle"])
def test_clean_target_keeps_the_clean_rationale(mode):
    recs = _records(10)
    data, targets, stats, _ = assemble(
        recs, _cfg(corrupt_frac=0.5, corrupt_mode=mode, semantic_target="clean"), FMT, 0)
    clean = {r["key"]: r["rationale"] for r in recs}
    by_key = _targets_by_key(targets)
    assert stats["semantic_target"] == "clean" and stats["corrupted_targets"] == 0
    assert [t["key"] for t in targets] == [r["key"] for r in recs]
    assert [r["emb_row"] for r in data["pst"]] == list(range(len(recs)))
    for row in data["pst"]:
        assert row["emb_key"] == row["key"] and by_key[row["key"]]["rationale"] == clean[row["key"]]
        assert (_rationale_segment(row) != clean[row["key"]]) == row["corrupted"]


def test_seen_targets_are_deterministic():
    recs = _records(10)
    cfg = _cfg(corrupt_frac=0.5, corrupt_mode="numbers")
    assert assemble(recs, cfg, FMT, 0) == assemble(recs, cfg, FMT, 0)
    _, other, _, _ = assemble(recs, cfg, FMT, 1)
    assert other != assemble(recs, cfg, FMT, 0)[1]


def test_numbers_shortfall_reported():
    recs = _records(4, tasks=("letters",))
    out, stats = corrupt_records(recs, 0.5, "numbers", seed=0)
    assert stats["requested"] == 2 and stats["eligible"] == 0 and stats["corrupted"] == 0


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("raw, match", [
    ({"methods": ["pst", "cot"]}, "unknown method"),
    ({"methods": []}, "at least 1"),
    ({"methods": ["pst", "pst"]}, "listed twice"),
    ({"corrupt_frac": 1.5}, "less than or equal to 1"),
    ({"corrupt_frac": -0.1}, "greater than or equal to 0"),
    ({"corrupt_mode": "typos"}, "numbers"),
    ({"max_per_task": 0}, "greater than or equal to 1"),
    ({"semantic_target": "corrupted"}, "seen"),
    ({"corupt_frac": 0.1}, "unknown key"),
])
def test_assemble_config_rejects(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse("assemble", raw)


def test_assemble_config_defaults():
    cfg = parse("assemble", {})
    assert cfg.methods == list(METHODS) and cfg.corrupt_frac == 0.0 and cfg.max_per_task is None
    assert cfg.semantic_target == "seen"
    assert json.dumps(cfg.model_dump())  # logged by runtime.setup


def test_adaptive_holdout_is_left_out_of_adaptive_only():
    recs = _records(10)
    data, _, stats, held = assemble(recs, _cfg(methods=["pst", "adaptive"], holdout_per_task=3),
                                    FMT, 0)
    held_ids = {h["id"] for h in held}
    assert len(held) == 9 and stats["adaptive_holdout"] == 9
    assert {h["task"] for h in held} == {"arith", "letters", "coin"}
    assert not held_ids & {r["id"] for r in data["adaptive"]}
    assert held_ids <= {r["id"] for r in data["pst"]}
    assert len(data["adaptive"]) == 2 * (30 - 9)
    assert set(held[0]) == {"id", "task", "question", "answer", "answer_type"}
    _, _, _, again = assemble(list(reversed(recs)), _cfg(methods=["adaptive"], holdout_per_task=3),
                              FMT, 0)
    assert {h["id"] for h in again} == held_ids  # by id hash, not file order
