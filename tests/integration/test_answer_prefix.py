"""A custom ``common.format.answer_prefix`` round-trips: teacher prompt and scoring, the
transformers teacher's stop and trim, assembly, tokenisation labels, evaluation scoring.

Every stage reads its sections from one params file, as the stage scripts do. The only
model is a hand-wired 1-layer Llama (a bigram table in real weights, run by transformers'
own ``generate``) that makes ``evaluate.generate_all`` write a known completion.
"""

from __future__ import annotations

import pytest
import yaml

from pst_distill.assemble.build import assemble
from pst_distill.config.sections import load_section
from pst_distill.formats import render_prompt
from pst_distill.train.data import encode_segments
from pst_distill.train.model import add_sem_token
from pst_distill.evaluate.run import generate_all
from pst_distill.scoring import score
from pst_distill.train.losses import ANSWER
from pst_distill.parsing import INVALID, normalize
from pst_distill.teacher.generate import generate_rationales
from pst_distill.teacher.generate import score as teacher_score
from pst_distill.teacher.base import Completion, Request, Sampling
from pst_distill.teacher.transformers_backend import (answer_line_regex, make_stopping_criteria,
                                                      trim_completion)

PREFIX = "Final answer:"
METHODS = ["answer_only", "pre_thinking", "step_by_step", "post_thinking", "pst"]


@pytest.fixture
def params(tmp_path):
    raw = {"common": {"seed": 3, "format": {"answer_prefix": PREFIX}},
           "teacher": {"backend": "reference", "only_correct": True},
           "assemble": {"methods": METHODS},
           "evaluate": {"batch_size": 2, "max_new_tokens_rationale": 12, "device": "cpu"}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from pst_distill.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))


def run_teacher(params, items):
    common, cfg = load_section(params, "teacher")
    assert common.format.answer_prefix == PREFIX
    return generate_rationales(items, cfg, common.format.answer_prefix, common.seed)


# ------------------------------------------------------------------ teacher
def test_reference_teacher_prompts_and_scores_with_the_prefix(params, teacher_items):
    items = teacher_items(6)
    kept, gens, stats = run_teacher(params, items)
    assert stats["kept"] == len(kept) == len(items), stats["dropped"]
    for rec, item in zip(kept, items):
        assert f"'{PREFIX} <answer>'" in rec["prompt"]  # the instruction names the prefix
        assert rec["pred_strict"] == normalize(item["answer"], "number")  # read off its line
        assert rec["correct"]
        assert rec["rationale"] == item["reference_rationale"]  # split at the prefix line


def test_teacher_line_in_another_format_is_not_strict(params, teacher_items):
    item = teacher_items(1)[0]
    sampling = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=8, stop=(), seed=0)
    req = Request(key="k" * 32, item=item, sample=0, messages=(), prompt="p")
    text = f"{item['reference_rationale']}\nAnswer: {item['answer']}"
    rec = teacher_score(req, Completion(key=req.key, text=text, finish_reason="stop"), {},
                        sampling, PREFIX)
    assert rec["pred_strict"] == INVALID  # "Answer:" is not the configured marker …
    assert rec["pred_answer"] == normalize(item["answer"], "number")  # … flexible still reads it
    assert rec["rationale"] == text  # and nothing is split off at a line that is not the prefix


# ------------------------------------------------------------------ transformers teacher
def test_transformers_teacher_stops_and_trims_at_the_prefix_line(tok):
    import torch

    assert answer_line_regex(PREFIX).search("x = 12.\nFinal answer: 12\n")
    assert not answer_line_regex(PREFIX).search("x = 12.\nAnswer: 12\n")
    done = "x = 12.\nFinal answer: 12\nQ: and now?"
    assert trim_completion(done, PREFIX, ()) == ("x = 12.\nFinal answer: 12", True)
    other = "x = 12.\nAnswer: 12\nQ: and now?"
    assert trim_completion(other, PREFIX, ()) == (other, False)

    prompt = tok("Q: 3 + 9?\nA:", add_special_tokens=False)["input_ids"]
    rows = [tok(t, add_special_tokens=False)["input_ids"]
            for t in ("x = 12.\nFinal answer: 12\n", "x = 12.\nAnswer: 12\n")]
    width = max(map(len, rows))  # same length: left-pad the shorter with newlines' id
    nl = tok("\n", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + nl * (width - len(r)) + r for r in rows])
    stop = make_stopping_criteria(tok, len(prompt), PREFIX, ())
    assert stop(ids, None).tolist() == [True, False]


# ------------------------------------------------------------------ assembly and tokenisation
def test_assembly_and_tokenisation_label_the_prefixed_answer(params, teacher_items, tok):
    kept, _, _ = run_teacher(params, teacher_items(4))
    common, cfg = load_section(params, "assemble")
    datasets, _, _, _ = assemble(kept, cfg, common.format, common.seed)
    add_sem_token(tok, common.format.sem_token)
    checked = 0
    for method, rows in datasets.items():
        for row in rows:
            answers = [s["text"] for s in row["segments"] if s["kind"] == "answer"]
            if not answers:
                continue  # step_by_step's explain row
            assert [a.strip() for a in answers] == [f"{PREFIX} {row['answer']}"], method
            ex = encode_segments(row["segments"], tok, 512, label_sem=True)
            ans = [(i, lab) for i, lab, part in zip(ex.input_ids, ex.labels, ex.parts)
                   if part == ANSWER]
            assert all(i == lab for i, lab in ans), method  # supervised as the answer
            text = tok.decode([i for i, _ in ans], skip_special_tokens=True).strip()
            assert text == f"{PREFIX} {row['answer']}", method
            checked += 1
    assert checked == 4 * len(METHODS)


# ------------------------------------------------------------------ evaluation
def test_evaluation_scores_the_prefixed_answer(params):
    common, _ = load_section(params, "evaluate")
    fmt = common.format
    item = {"id": "q", "task": "multistep_arithmetic", "answer": "12", "answer_type": "number"}

    def judge(text, method, first_line):
        res = {"text": text, "generated_tokens": 5, "finish_reason": "stop", "seconds": 0.1}
        p = score(item, res, method, first_line, fmt.answer_prefix)
        return p["correct_strict"], p["correct_flexible"]

    assert judge("Final answer: 12", "pst", True) == (True, True)
    assert judge("3 + 9 = 12.\nFinal answer: 12", "pre_thinking", False) == (True, True)
    assert judge("Answer: 12", "pst", True) == (False, True)  # not the configured marker
    assert judge("3 + 9 = 12.\nAnswer: 12", "pre_thinking", False) == (False, True)


def bigram_model(tok, chain: list[int]):
    """A real 1-layer Llama whose greedy step maps chain[i] -> chain[i + 1]: attention and
    MLP outputs are zero, so the logits read the current token's embedding only."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=64,
                      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                      tie_word_embeddings=False, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.norm.weight.fill_(1.0)
        for i, (cur, nxt) in enumerate(zip(chain, chain[1:])):
            model.model.embed_tokens.weight[cur, i] = 1.0
            model.lm_head.weight[nxt, i] = 10.0
    return model


@pytest.mark.parametrize("written,strict", [("Final answer: 12", True), ("Answer: 12", False)])
def test_generate_all_scores_with_the_configured_prefix(params, tok, written, strict):
    common, cfg = load_section(params, "evaluate")
    item = {"id": "q", "task": "multistep_arithmetic", "question": "What is 3 + 9?",
            "answer": "12", "answer_type": "number"}
    start = tok(render_prompt(tok, item["question"]), add_special_tokens=False)["input_ids"][-1]
    chain = [start, *tok(written, add_special_tokens=False)["input_ids"], tok.eos_token_id]
    assert len(set(chain)) == len(chain)
    [pred] = generate_all(bigram_model(tok, chain), tok, [item], "pre_thinking", common.format, cfg)
    assert pred["completion"] == written
    assert (pred["correct_strict"], pred["correct_flexible"]) == (strict, True)
