"""Evaluation on tiny models overfit on one sequence each (post_thinking, pst, pre_thinking)
and on the packaged SmolLM2: answer-first methods stop at the rationale delimiter or at
[SEM] after a few tokens, pre_thinking writes its rationale first and is scored on the
whole completion, left-padded batches generate what one-by-one generation does, and the
metrics add up to the predictions."""

from collections import Counter

import pytest
from student_fixtures import FMT, assembled_rows, embeddings, items, settings, tiny_model_dir

from pst_distill.train import loop
from pst_distill.config.evaluate import EvaluateConfig
from pst_distill.formats import render_prompt
from pst_distill.evaluate.generate import generate_batch
from pst_distill.evaluate.run import evaluate
from pst_distill.formats import inference_prompt
from pst_distill.models import load_causal_lm

ITEM = items(1)[0]  # last letter, k=2: 'Take the last letters of each word in "…" and …'
# batch-mates of other lengths, so the memorised item is left-padded in its batch
LONGER = items(1, "coin_flip")[0]
SHORTER = {"id": "short", "task": "last_letter_concatenation", "question": 'Last letters of "Ab"?',
           "answer": "b", "answer_type": "text"}


def overfit(tmp, method: str, steps: int = 60):
    """Folder of a tiny model that memorised ITEM's ``method`` sequence (60 steps, lr 1e-2)."""
    s = settings(tiny_model_dir(tmp / "base"), method, steps=steps, batch_size=1,
                 save_every=steps, lr=1e-2, max_grad_norm=1.0)
    loop.train(assembled_rows(method, [ITEM]), s, method, FMT, 0, tmp / "model",
                  tmp / "loss.tsv", embeddings(1), "cpu")
    return tmp / "model"


@pytest.fixture(scope="module")
def post_thinking(tmp_path_factory):
    return overfit(tmp_path_factory.mktemp("post"), "post_thinking")


@pytest.fixture(scope="module")
def pst(tmp_path_factory):
    return overfit(tmp_path_factory.mktemp("pst"), "pst")


@pytest.fixture(scope="module")
def pre_thinking(tmp_path_factory):
    return overfit(tmp_path_factory.mktemp("pre"), "pre_thinking")


def load(model_dir):
    return load_causal_lm(str(model_dir), device="cpu", dtype="float32")


def run_eval(model_dir, method, **cfg):
    """ITEM batched with a longer and a shorter prompt; the predictions keep ITEM first."""
    model, tok = load(model_dir)
    cfg = EvaluateConfig(**{"batch_size": 3, "max_new_tokens": 40, **cfg})
    preds, metrics = evaluate(model, tok, [ITEM, LONGER, SHORTER], method, FMT, cfg)
    assert [p["id"] for p in preds] == [ITEM["id"], LONGER["id"], SHORTER["id"]]
    return preds, metrics, tok


def n_tokens(tok, *texts) -> int:
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)


def answer_line() -> str:
    return f"{FMT.answer_prefix} {ITEM['answer']}"


@pytest.mark.model
def test_prompts_of_the_batch_differ_in_length(post_thinking):
    _, tok = load(post_thinking)
    lengths = [n_tokens(tok, render_prompt(tok, inference_prompt("pst", it["question"])))
               for it in (SHORTER, ITEM, LONGER)]
    assert lengths == sorted(set(lengths)), lengths  # ITEM is padded on the left in its batch


@pytest.mark.model
def test_answer_first_generation_stops_at_rationale_delimiter(post_thinking):
    preds, metrics, tok = run_eval(post_thinking, "post_thinking")
    p = preds[0]
    assert p["completion"] == answer_line()
    assert p["finish_reason"] == "stop" and FMT.rationale_prefix not in p["completion"]
    assert p["correct_strict"] and p["correct_flexible"]
    # the answer line and the delimiter, not one token more
    assert p["generated_tokens"] == n_tokens(tok, answer_line() + "\n", FMT.rationale_prefix)
    assert metrics["generation"]["stop_strings"] == [FMT.rationale_prefix, FMT.sem_token]
    assert metrics["generation"]["scored_text"] == "first line"


@pytest.mark.model
def test_pst_generation_stops_at_sem(pst):
    preds, metrics, tok = run_eval(pst, "pst")
    p = preds[0]
    assert p["completion"] == answer_line() and p["finish_reason"] == "stop"
    assert p["correct_strict"]
    # answer line + the one [SEM] token: generation stopped there, not at "Reasoning:"
    assert p["generated_tokens"] == n_tokens(tok, answer_line() + "\n") + 1
    # [SEM] alone stops it too; without stops the model writes [SEM] and goes on
    model, _ = load(pst)
    prompt = render_prompt(tok, inference_prompt("pst", ITEM["question"]))
    alone = generate_batch(model, tok, [prompt], [FMT.sem_token], 40)[0]
    assert (alone["text"], alone["finish_reason"]) == (answer_line(), "stop")
    free = generate_batch(model, tok, [prompt], [], 40)[0]["text"]
    assert free.startswith(f"{answer_line()}\n{FMT.sem_token}") and len(free) > len(alone["text"]) + 6


@pytest.mark.model
def test_pre_thinking_writes_its_rationale_and_is_scored_on_the_whole_completion(pre_thinking):
    # max_new_tokens (answer-first budget) is far too small: pre_thinking must not use it
    preds, metrics, tok = run_eval(pre_thinking, "pre_thinking", max_new_tokens=4,
                                   max_new_tokens_rationale=120)
    p = preds[0]
    rationale = f"{FMT.rationale_prefix} {ITEM['reference_rationale']}"
    assert p["completion"] == f"{rationale}\n{answer_line()}"
    assert p["finish_reason"] == "eos"
    assert p["generated_tokens"] == n_tokens(tok, rationale + "\n", answer_line()) + 1  # + EOS
    assert p["correct_strict"] and p["pred_strict"] == ITEM["answer"]  # answer on the last line
    gen = metrics["generation"]
    assert gen["max_new_tokens"] == 120 and gen["stop_strings"] == []
    assert gen["scored_text"] == "whole completion"


@pytest.mark.model
def test_generate_rationale_goes_past_the_delimiter(post_thinking):
    preds, metrics, tok = run_eval(post_thinking, "post_thinking", generate_rationale=True,
                                   max_new_tokens_rationale=60)
    p = preds[0]
    assert p["completion"].startswith(f"{answer_line()}\n{FMT.rationale_prefix}")
    assert p["generated_tokens"] > n_tokens(tok, answer_line() + "\n", FMT.rationale_prefix)
    assert p["correct_strict"] and metrics["generation"]["max_new_tokens"] == 60


@pytest.mark.model
def test_metrics_add_up_to_the_predictions(post_thinking):
    preds, m, _ = run_eval(post_thinking, "post_thinking")
    assert m["stage"] == "evaluate_student" and m["method"] == "post_thinking" and m["n"] == 3
    assert m["accuracy_strict"] == pytest.approx(sum(p["correct_strict"] for p in preds) / 3)
    assert m["accuracy_flexible"] == pytest.approx(sum(p["correct_flexible"] for p in preds) / 3)
    by_task = Counter(p["task"] for p in preds)
    assert {t: v["n"] for t, v in m["tasks"].items()} == dict(by_task)
    assert m["generated_tokens_per_question"] == pytest.approx(
        sum(p["generated_tokens"] for p in preds) / 3)
    assert m["finish_reasons"] == dict(Counter(p["finish_reason"] for p in preds))
    assert m["seconds_per_question"] > 0
    assert m["selection"]["per_task"] is None  # evaluate.per_task null: every test question
    assert {t: v["selected"] for t, v in m["selection"]["tasks"].items()} == dict(by_task)


@pytest.mark.model
def test_latency_times_the_first_questions_of_each_task_alone(post_thinking):
    # ITEM and SHORTER are last-letter questions, LONGER a coin flip: the first question of
    # each task in the input's order (ITEM, LONGER) is timed, SHORTER is not
    preds, m, _ = run_eval(post_thinking, "post_thinking", latency_per_task=1)
    assert ["latency_seconds" in p for p in preds] == [True, True, False]
    assert all(p["latency_seconds"] > 0 for p in preds[:2])
    # the memorised question gives the same completion alone as in its padded batch
    assert preds[0]["latency_same_text"] is True
    assert m["latency"] == {"questions": 2, "batch_size": 1,
                            "same_text_as_batched": sum(p["latency_same_text"] for p in preds[:2])}
    assert m["latency_seconds_per_question"] == pytest.approx(
        sum(p["latency_seconds"] for p in preds[:2]) / 2)
    assert m["tasks"]["coin_flip"]["latency_questions"] == 1
    # off by default: no latency fields anywhere
    preds, m, _ = run_eval(post_thinking, "post_thinking")
    assert not any("latency_seconds" in p for p in preds) and "latency" not in m
    assert "latency_seconds_per_question" not in m


@pytest.mark.model
def test_left_padded_batch_generates_what_one_by_one_generation_does():
    """The packaged SmolLM2, greedy: prompts of very different lengths in one batch."""
    model, tok = load_causal_lm("smollm2-135m-instruct", device="cpu", dtype="float32")
    questions = ["What is 2 + 3?",
                 "Name a colour.",
                 "A farmer has 17 sheep, buys 5 more, then sells 8 of them at the market on "
                 "Sunday morning. How many sheep does the farmer have now? Explain briefly."]
    prompts = [render_prompt(tok, q) for q in questions]
    assert len({n_tokens(tok, p) for p in prompts}) == 3
    for stops in ([], ["=", ","]):
        batched = generate_batch(model, tok, prompts, stops, 16)
        alone = [generate_batch(model, tok, [p], stops, 16)[0] for p in prompts]
        assert batched == alone
        assert all(r["text"] and r["generated_tokens"] > 0 for r in batched)
        assert ("stop" in {r["finish_reason"] for r in batched}) == bool(stops)


@pytest.mark.model
def test_decode_completion_ends_at_eos_or_padding_and_cuts_at_stops():
    """The one decoder of generated rows (evaluation, transformers teacher, test server)."""
    from pst_distill.train.model import add_sem_token
    from pst_distill.models import decode_completion, load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    add_sem_token(tok, FMT.sem_token)
    ids = tok("Answer: 12\n[SEM] Reasoning: 3 * 4", add_special_tokens=False)["input_ids"]
    n_answer = n_tokens(tok, "Answer: 12\n")
    eos, pad = tok.eos_token_id, tok.pad_token_id
    text = tok.decode(ids, skip_special_tokens=False)
    assert decode_completion(ids + [eos, pad, pad], tok, [], False) == (text, len(ids), "eos")
    assert decode_completion(ids, tok, [], False) == (text, len(ids), "length")
    assert decode_completion(ids[:n_answer] + [eos] + ids[n_answer:], tok, [], False) == (
        "Answer: 12\n", n_answer, "eos")
    # stops: the text ends before the first one found; the count is what was generated
    assert decode_completion(ids + [pad], tok, [FMT.rationale_prefix, FMT.sem_token], False) == (
        "Answer: 12\n", len(ids), "stop")
    # special tokens skipped (teacher, server): no [SEM] in the text, so it cannot stop it
    plain, n, end = decode_completion(ids + [eos], tok, [FMT.sem_token])
    assert FMT.sem_token not in plain and (n, end) == (len(ids), "eos")


def test_answer_first_is_scored_on_its_first_line():
    from pst_distill.scoring import answer_part, score

    assert answer_part("\nAnswer: no\nAnswer: yes") == "Answer: no"
    item = {"id": "x", "task": "coin_flip", "answer": "no", "answer_type": "yes-no"}
    res = {"text": "Answer: no\nAnswer: yes", "generated_tokens": 9, "finish_reason": "length",
           "seconds": 0.1}
    assert score(item, res, "pst", first_line=True)["correct_strict"]
    assert not score(item, res, "pre_thinking")["correct_strict"]  # last answer line counts


@pytest.mark.model
def test_incremental_answer_line_stop_matches_the_rule_on_real_tokens():
    """The O(1) stop against the rule by definition (decode the whole completion at every
    step), on the SmolLM2 tokenizer, whose tokens join a newline to text on either side."""
    import random

    from stops import incremental_stop_steps, quadratic_stop_steps

    from pst_distill.models import load_tokenizer
    from pst_distill.tasks import build_task
    from pst_distill.config.prepare import TaskSpec

    tok = load_tokenizer("smollm2-135m-instruct")
    rng = random.Random(0)
    texts = []
    for task, options in (("multistep_arithmetic", {"steps": 2, "max_value": 50}),
                          ("coin_flip", {"k": 3}), ("last_letter_concatenation", {"k": 2})):
        for it in build_task(TaskSpec(name=task, n=12, options=options), 1):
            answer = f"Answer: {it['answer']}"
            texts += [f"Reasoning: {it['reference_rationale']}\n{answer}\n{answer}\n",
                      f"Reasoning: {it['reference_rationale']} {answer}.\n\nMore.",
                      f"Reasoning: {it['reference_rationale']}\n{answer}",
                      f"{answer}\n" + rng.choice(["", "Answer:\n", "x\n"])]
    prompt = tok("Question?", add_special_tokens=False)["input_ids"]
    rows = [prompt + tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    steps = incremental_stop_steps(tok, rows, len(prompt), "Answer:", pad=tok.pad_token_id)
    assert steps == quadratic_stop_steps(tok, rows, len(prompt), "Answer:")
    assert sum(s is not None for s in steps) >= len(texts) // 2
