"""End to end: copy the repo, `dvc repro` the tiny profile, check that the outputs agree with
the params and with each other (splits, rationales, embeddings, steps, predictions vs
metrics, finish reasons), then that a second repro does nothing and `dvc status` is clean."""

import json
import math
from collections import Counter
from pathlib import Path
from statistics import mean

import numpy as np
import pytest
import yaml
from project import copy_project, profile, run_dvc

pytestmark = [pytest.mark.model, pytest.mark.dvc]


@pytest.fixture(scope="module")
def repo(tmp_path_factory, dvc_cache):
    """The tiny profile on one training seed (the report's handling of several seeds is
    tested in tests/unit/test_report.py), in a project copy sharing the session's cache."""
    params = profile("tiny")
    params["train"]["seeds"] = params["train"]["seeds"][:1]
    dst = copy_project(tmp_path_factory.mktemp("repo"), params, dvc_cache=dvc_cache)
    run_dvc(["repro"], dst)
    return dst


def jsonl(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def params(repo) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


def layout(repo) -> dict:
    return yaml.safe_load((repo / "dvc.yaml").read_text())["vars"][0]["paths"]


def agree(a, b) -> bool:
    """Equal where both say something (numbers up to the metrics files' rounding)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return all(agree(a[k], b[k]) for k in a.keys() & b.keys())
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-3)
    return a == b


def record(repo, rel: str) -> dict:
    """What a stage wrote about itself: its metrics file and its details (logs), which
    must agree on every key they share, merged."""
    paths = layout(repo)
    files = [repo / paths[k] / rel for k in ("metrics", "logs") if (repo / paths[k] / rel).exists()]
    assert files, f"no {rel} under {paths['metrics']}/ or {paths['logs']}/"
    merged: dict = {}
    for f in files:
        for key, value in json.loads(f.read_text()).items():
            assert agree(merged.get(key, value), value), (
                f"{rel}: {key} differs between {[str(f.relative_to(repo)) for f in files]} "
                "(is one a stale file of an older layout, still in git?)")
            merged[key] = value
    return merged


def test_prepare_teacher_and_embeddings_line_up(repo):
    paths = layout(repo)
    train = jsonl(repo / paths["prepared"] / "train.jsonl")
    test = jsonl(repo / paths["prepared"] / "test.jsonl")
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    prep = record(repo, "prepare.json")
    for spec in params(repo)["prepare"]["tasks"]:  # every generated item is in one split
        task = spec["name"]
        assert sum(r["task"] == task for r in train + test) == spec["n"]
        assert prep["train"][task] == sum(r["task"] == task for r in train)
    teacher = record(repo, "teacher.json")
    kept = jsonl(repo / paths["rationales"] / "train.jsonl")
    assert teacher["kept"] == len(kept) == len(train) and teacher["dropped"] == {}
    by_id = {r["id"]: r for r in train}
    # the reference teacher writes each item's own reference rationale, and it is correct
    assert all(k["rationale"].strip() == by_id[k["id"]]["reference_rationale"].strip()
               and k["correct"] for k in kept)
    # no corruption in the tiny profile: one target per kept rationale, its own text
    targets = jsonl(repo / paths["targets"] / "targets.jsonl")
    assert {t["key"]: t["rationale"] for t in targets} == {k["key"]: k["rationale"].strip()
                                                           for k in kept}
    keys = json.loads((repo / paths["embeddings"] / "keys.json").read_text())
    vectors = np.load(repo / paths["embeddings"] / "rationales.npy")
    assert keys == [t["key"] for t in targets] and vectors.shape[0] == len(targets)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


METHODS = ["answer_only", "pre_thinking", "step_by_step", "post_thinking", "pst"]


def runs(repo, method: str) -> list[str]:
    """A method's runs, one per training seed: ``<method>-<seed>``."""
    return [f"{method}-{seed}" for seed in params(repo)["train"]["seeds"]]


def curve(repo, run: str) -> list[dict]:
    head, *rows = [ln.split("\t") for ln in (repo / layout(repo)["curves"] / f"{run}.tsv")
                   .read_text().splitlines()]
    return [dict(zip(head, map(float, row))) for row in rows]


@pytest.mark.parametrize("method", [*METHODS, "adaptive"])
def test_training_ran_the_configured_steps(repo, method):
    cfg = params(repo)["train"]
    steps = cfg["methods"][method].get("steps", cfg["defaults"]["steps"])
    for run in runs(repo, method):
        m = record(repo, f"train/{run}.json")
        rows = curve(repo, run)
        assert m["steps"] == steps and [r["step"] for r in rows] == list(range(1, steps + 1))
        assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in rows)
        assert m["final_loss"] == pytest.approx(rows[-1]["loss"], rel=1e-4)
        assert rows[-1]["tokens"] == m["tokens"] > 0
        model = repo / layout(repo)["models"] / run
        # a LoRA student is its adapter + the base's name, not a copy of the base model
        assert (model / "adapter_model.safetensors").exists() and (model / "base_model.json").exists()
        size = sum(f.stat().st_size for f in model.rglob("*") if f.is_file())
        assert size < 30e6, f"{run}: {size / 1e6:.0f} MB"
        if method in ("pst", "adaptive"):  # the semantic loss is on, and only for these
            assert (model / "semantic_head.safetensors").exists()
            assert m["loss_weights"]["w_sem"] == cfg["sem"]["weight"] > 0
            assert all(r["sem"] > 0 for r in rows)
        else:
            assert not (model / "semantic_head.safetensors").exists()
            assert all(r["sem"] == 0 for r in rows)


def test_loss_went_down_in_most_runs(repo):
    ends = [(rows[0]["loss"], rows[-1]["loss"])
            for m in METHODS for rows in (curve(repo, run) for run in runs(repo, m))]
    assert sum(last < first for first, last in ends) > len(ends) / 2, ends


def test_pst_answers_then_stops_at_sem(repo):
    """The tiny profile trains pst long enough to learn its format: the answer line, then
    [SEM], where generation stops (the rationale after it is never generated)."""
    from transformers import AutoTokenizer

    fmt = params(repo)["common"]["format"]
    for run in runs(repo, "pst"):
        tok = AutoTokenizer.from_pretrained(repo / layout(repo)["models"] / run)
        for p in jsonl(repo / layout(repo)["predictions"] / f"{run}.jsonl"):
            assert p["finish_reason"] == "stop" and p["pred_strict"] != "[invalid]", p
            assert p["completion"].startswith(fmt["answer_prefix"] + " "), p
            # exactly the answer line and the one [SEM] token were generated
            answer_line = tok(p["completion"] + "\n", add_special_tokens=False)["input_ids"]
            assert p["generated_tokens"] == len(answer_line) + 1, p


@pytest.mark.parametrize("method", METHODS)
def test_predictions_and_metrics_agree(repo, method):
    ev, fmt = params(repo)["evaluate"], params(repo)["common"]["format"]
    test = {r["id"]: r for r in jsonl(repo / "data/prepared/test.jsonl")}
    for run in runs(repo, method):
        preds = jsonl(repo / layout(repo)["predictions"] / f"{run}.jsonl")
        m = record(repo, f"eval/{run}.json")
        by_task = Counter(p["task"] for p in preds)
        available, per_task = Counter(r["task"] for r in test.values()), ev.get("per_task")
        assert dict(by_task) == {t: a if per_task is None else min(per_task, a)
                                 for t, a in available.items()}  # per_task of each task
        assert len(preds) == m["n"] == len({p["id"] for p in preds})
        assert all(p["id"] in test and p["answer"] == test[p["id"]]["answer"]
                   and p["method"] == method for p in preds)
        assert {t: v["n"] for t, v in m["tasks"].items()} == dict(by_task)
        for score in ("strict", "flexible"):
            assert m[f"accuracy_{score}"] == pytest.approx(mean(p[f"correct_{score}"] for p in preds))
            for task, v in m["tasks"].items():
                assert v[f"accuracy_{score}"] == pytest.approx(
                    mean(p[f"correct_{score}"] for p in preds if p["task"] == task))
        assert m["generated_tokens_per_question"] == pytest.approx(
            mean(p["generated_tokens"] for p in preds), abs=1e-3)
        assert m["finish_reasons"] == dict(Counter(p["finish_reason"] for p in preds))
        # evaluate.latency_per_task: the first k of each task also timed alone
        timed = [p for p in preds if "latency_seconds" in p]
        assert Counter(p["task"] for p in timed) == {
            t: min(ev["latency_per_task"], n) for t, n in by_task.items()}
        assert m["latency"]["questions"] == len(timed) and all(p["latency_seconds"] > 0 for p in timed)
        assert m["latency_seconds_per_question"] == pytest.approx(
            mean(p["latency_seconds"] for p in timed), abs=1e-3)
        answer_first = method != "pre_thinking"
        budget = ev["max_new_tokens"] if answer_first else ev["max_new_tokens_rationale"]
        stops = [fmt["rationale_prefix"], fmt["sem_token"]] if answer_first else []
        gen = m["generation"]
        assert gen["max_new_tokens"] == budget and gen["stop_strings"] == stops
        assert gen["scored_text"] == ("first line" if answer_first else "whole completion")
        assert gen["stop_after_answer_line"] == (not answer_first)
        for p in preds:  # each finish reason says what happened to its row
            assert 0 < p["generated_tokens"] <= budget
            assert p["finish_reason"] in ("stop", "eos", "length")
            if not answer_first and p["finish_reason"] == "stop":  # stopped after its answer line
                assert fmt["answer_prefix"] in p["completion"].splitlines()[-1], p
            assert (p["finish_reason"] == "length") <= (p["generated_tokens"] == budget)
            assert not any(s in p["completion"] for s in stops)


def test_report_shows_every_method(repo):
    report = (repo / "reports/report.md").read_text()
    score = params(repo)["report"]["score"]
    for method in METHODS:  # its row shows its accuracy, the mean over its seeds
        acc = mean(record(repo, f"eval/{run}.json")[f"accuracy_{score}"] for run in runs(repo, method))
        rows = [ln for ln in report.splitlines() if ln.startswith(f"| {method} |")]
        assert rows and f"{acc:.3f}" in rows[0], (method, acc, rows)
    assert (repo / "reports/accuracy.png").stat().st_size > 1000


def test_adaptive_modes_and_routes_cover_the_evaluation_set(repo):
    """The adaptive evaluation answers its held-out questions and the evaluation set every
    method gets in both modes; the report's routers answer every evaluation question in the
    mode they say, charged their route; held-out questions are neither trained on nor tested."""
    from pst_distill.config.adaptive import AdaptiveConfig
    from pst_distill.evaluate.routing import route_rows

    paths, fmt = layout(repo), params(repo)["common"]["format"]
    held = {r["id"] for r in jsonl(repo / paths["holdout"] / "adaptive.jsonl")}
    trained = {r["id"] for r in jsonl(repo / paths["assembled"] / "adaptive.jsonl")}
    test = {r["id"] for r in jsonl(repo / "data/prepared/test.jsonl")}
    assert len(held) == 2 * len(params(repo)["prepare"]["tasks"])
    assert not held & trained and not held & test
    assert held <= {r["id"] for r in jsonl(repo / paths["assembled"] / "pst.jsonl")}
    summary = json.loads((repo / "reports/summary.json").read_text())
    for run_name in runs(repo, "adaptive"):
        seed = int(run_name.rsplit("-", 1)[1])
        rows = jsonl(repo / paths["predictions"] / f"{run_name}.jsonl")
        ids = sorted(p["id"] for p in jsonl(repo / paths["predictions"] / f"pst-{seed}.jsonl"))
        for split, want in (("holdout", sorted(held)), ("test", ids)):
            for mode in ("fast", "think"):
                got = [r for r in rows if r["split"] == split and r["mode"] == mode]
                assert sorted(r["id"] for r in got) == want, (split, mode)
        assert all(r["completion"].startswith(fmt["rationale_prefix"])
                   for r in rows if r["mode"] == "think")
        m = record(repo, f"eval/{run_name}.json")
        for mode, fig in m["modes"].items():
            tested = [r for r in rows if r["split"] == "test" and r["mode"] == mode]
            assert fig["n"] == len(tested) and fig["accuracy_flexible"] == pytest.approx(
                mean(r["correct_flexible"] for r in tested))
        routed, fit = route_rows(rows, AdaptiveConfig(**params(repo)["adaptive"]), seed)
        assert summary["frontier"]["fit"]["adaptive"][str(seed)]["tau"] == fit["tau"]
        by: dict = {}
        for r in routed:
            by.setdefault(r["method"].split(":", 1)[1], []).append(r)
        assert {"always_fast", "always_think", "confidence", "perception", "oracle"} <= set(by)
        assert all(sorted(r["id"] for r in rs) == ids for rs in by.values())
        fast = {r["id"]: r for r in by["always_fast"]}
        assert all(r["mode"] == "fast" for r in fast.values())
        assert all(r["mode"] == "think" for r in by["always_think"])
        for r in by["confidence"]:  # think exactly where the fast answer is unsure
            assert (r["mode"] == "think") == (r["confidence"] < r["tau"]), r
            paid = fast[r["id"]]["generated_tokens"] if r["mode"] == "think" else 0
            assert r["generated_tokens"] >= paid
        assert all(r["mode"] == "fast" for r in by["confidence@0.00"])
        tok_dir = repo / paths["models"] / run_name
        vocab = json.loads((tok_dir / "tokenizer.json").read_text())["added_tokens"]
        assert {"[FAST]", "[THINK]", fmt["sem_token"]} <= {t["content"] for t in vocab if t["special"]}
    report = (repo / "reports/report.md").read_text()
    assert "## Adaptive thinking" in report and "oracle (upper bound, analysis only)" in report
    assert (repo / "reports/frontier.png").stat().st_size > 1000
    assert "adaptive:oracle" not in summary["methods"] and summary["frontier"]["confidence_sweep"]
    for router in ("always_fast", "always_think", "confidence", "perception"):
        assert f"adaptive:{router}" in summary["methods"]


def test_second_repro_is_a_noop_and_status_clean(repo):
    _, out = run_dvc(["repro"], repo)
    assert "didn't change, skipping" in out or "is cached" in out
    assert "Running stage" not in out
    _, status = run_dvc(["status"], repo)
    assert "up to date" in status, status
