"""Exact token spans and masks per method, on the real SmolLM2 tokenizer (tokenizer only;
the packaged alias converts the model once, so this lives in tests/integration). Every span
test runs with [SEM] unsupervised and supervised (``label_sem``; training's default is
``train.label_sem_token: true``)."""

import pytest

from pst_distill.config.common import FormatConfig
from pst_distill.config.train import TrainSettings
from pst_distill.formats import render_prompt
from pst_distill.train.data import collate, encode_rows, encode_segments
from pst_distill.train.model import add_sem_token
from pst_distill.formats import training_sequences
from pst_distill.methods import METHODS
from pst_distill.train.losses import ANSWER, IGNORE, NO_LOSS, RATIONALE, SEM

FMT = FormatConfig()
Q = 'Take the last letters of each word in "Mary Rosa" and concatenate them.'
A = "ya"
R = 'The last letter of "Mary" is "y". The last letter of "Rosa" is "a". So "ya".'


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from pst_distill.models import resolve_model

    t = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    add_sem_token(t, FMT.sem_token)
    return t


def spans(ex):
    """Consecutive (part, ids, supervised) runs of an example."""
    out = []
    for i, (tid, part, lab) in enumerate(zip(ex.input_ids, ex.parts, ex.labels)):
        key = (part, lab != IGNORE)
        if out and out[-1][0] == key:
            out[-1][1].append(tid)
        else:
            out.append((key, [tid]))
    return out


def decode(tok, ids):
    return tok.decode(ids, skip_special_tokens=False)


def seqs(method):
    return [[s.as_dict() for s in seq] for seq in training_sequences(method, Q, A, R, FMT)]


LABEL_SEM = [False, True]


def test_training_default_supervises_sem():
    assert TrainSettings().label_sem_token is True  # so label_sem=True is the trained case


def want_part(kind: str, label_sem: bool) -> tuple[int, bool]:
    """(part, supervised) of a segment kind: [SEM], when labelled, is its own part."""
    if kind == "sem":
        return (SEM, True) if label_sem else (NO_LOSS, False)
    return {"prompt": (NO_LOSS, False), "answer": (ANSWER, True),
            "rationale": (RATIONALE, True)}[kind]


@pytest.mark.model
@pytest.mark.parametrize("label_sem", LABEL_SEM)
# adaptive's prompt and mode control are adjacent unsupervised runs: tests/integration/test_adaptive.py
@pytest.mark.parametrize("method", [m for m in METHODS if m != "adaptive"])
def test_spans_match_segments_exactly(tok, method, label_sem):
    for segments in seqs(method):
        ex = encode_segments(segments, tok, max_length=512, label_sem=label_sem)
        assert ex.input_ids[-1] == tok.eos_token_id and not ex.truncated
        got = spans(ex)
        want = []
        for i, seg in enumerate(segments):
            text = render_prompt(tok, seg["text"]) if seg["kind"] == "prompt" else seg["text"]
            if i == len(segments) - 1:
                text += tok.eos_token
            want.append((want_part(seg["kind"], label_sem), text))
        # unlabelled, prompt and [SEM] are both unsupervised NO_LOSS: adjacent runs would
        # merge, but [SEM] always follows the answer, so runs and segments line up one to one
        assert [k for k, _ in got] == [k for k, _ in want]
        assert [decode(tok, ids) for _, ids in got] == [t for _, t in want]


@pytest.mark.model
def test_prompt_uses_chat_template_and_sem_is_one_masked_token(tok):
    ex = encode_segments(seqs("pst")[0], tok, max_length=512)
    prompt = decode(tok, [t for t, p in zip(ex.input_ids, ex.parts) if p == NO_LOSS][:-1])
    assert prompt.startswith("<|im_start|>") and prompt.endswith("<|im_start|>assistant\n")
    assert Q in prompt
    assert ex.input_ids[ex.sem_pos] == tok.convert_tokens_to_ids(FMT.sem_token)
    assert ex.labels[ex.sem_pos] == IGNORE and ex.parts[ex.sem_pos] == NO_LOSS
    assert decode(tok, ex.input_ids[ex.sem_pos - 2:ex.sem_pos + 3]).count(FMT.sem_token) == 1
    labelled = encode_segments(seqs("pst")[0], tok, max_length=512, label_sem=True)
    assert labelled.labels[labelled.sem_pos] == labelled.input_ids[labelled.sem_pos]
    assert labelled.parts[labelled.sem_pos] == SEM
    # labelling [SEM] changes that one token's label and part, nothing else
    assert (labelled.input_ids, labelled.sem_pos) == (ex.input_ids, ex.sem_pos)
    diff = [i for i, (a, b) in enumerate(zip(ex.labels, labelled.labels)) if a != b]
    assert diff == [ex.sem_pos]
    diff = [i for i, (a, b) in enumerate(zip(ex.parts, labelled.parts)) if a != b]
    assert diff == [ex.sem_pos]


@pytest.mark.model
def test_no_chat_template_falls_back_to_plain_prompt(tok):
    saved = tok.chat_template
    try:
        tok.chat_template = None
        assert render_prompt(tok, "2+2?") == "Q: 2+2?\nA: "
    finally:
        tok.chat_template = saved


@pytest.mark.model
@pytest.mark.parametrize("label_sem", LABEL_SEM)
@pytest.mark.parametrize("method", ["pre_thinking", "post_thinking", "pst"])
def test_truncation_cuts_only_the_rationale_from_the_right(tok, method, label_sem):
    full = encode_segments(seqs(method)[0], tok, max_length=512, label_sem=label_sem)
    limit = len(full) - 7
    ex = encode_segments(seqs(method)[0], tok, max_length=limit, label_sem=label_sem)
    assert len(ex) == limit and ex.truncated
    assert ex.sem_pos == full.sem_pos  # [SEM] (pst) is never cut, labelled or not
    assert [p for p in ex.parts if p == SEM] == [p for p in full.parts if p == SEM]
    answer = [t for t, p in zip(ex.input_ids, ex.parts) if p == ANSWER]
    assert answer == [t for t, p in zip(full.input_ids, full.parts) if p == ANSWER]
    rat_full = [t for t, p in zip(full.input_ids, full.parts) if p == RATIONALE]
    rat = [t for t, p in zip(ex.input_ids, ex.parts) if p == RATIONALE]
    assert rat == rat_full[: len(rat_full) - 7]


@pytest.mark.model
def test_too_long_prompt_and_answer_is_dropped_and_counted(tok):
    rows = [{"segments": seqs("answer_only")[0], "emb_row": None},
            {"segments": seqs("post_thinking")[0], "emb_row": 3}]
    prompt_len = len(tok(render_prompt(tok, Q), add_special_tokens=False)["input_ids"])
    examples, stats = encode_rows(rows, tok, max_length=prompt_len + 2)
    assert stats["dropped_too_long"] == 2 and examples == []
    examples, stats = encode_rows(rows, tok, max_length=512)
    assert [e.emb_row for e in examples] == [-1, 3] and stats["sequences"] == 2


@pytest.mark.model
def test_collate_pads_right_with_masks(tok):
    examples, _ = encode_rows([{"segments": s} for s in seqs("step_by_step")], tok, 512)
    b = collate(examples, tok.pad_token_id)
    short = min(range(2), key=lambda i: len(examples[i]))
    n = len(examples[short])
    assert b["input_ids"].shape == (2, max(len(e) for e in examples))
    assert b["attention_mask"][short, n:].sum() == 0 and b["attention_mask"][short, :n].all()
    assert (b["labels"][short, n:] == IGNORE).all() and (b["parts"][short, n:] == NO_LOSS).all()
    assert b["sem_pos"].tolist() == [-1, -1]
    # step_by_step: the predict row supervises only the answer, explain only the rationale
    assert set(examples[0].parts) == {NO_LOSS, ANSWER}
    assert set(examples[1].parts) == {NO_LOSS, RATIONALE}


def test_token_cache_returns_what_tokenising_does_and_misses_on_any_input_change(tok, tmp_path):
    from pst_distill.train.data import encode_rows_cached

    rows = [{"id": f"q{i}", "emb_row": i, "segments": [s.as_dict() for s in seq]}
            for i, method in enumerate(("pst", "post_thinking", "adaptive"))
            for seq in training_sequences(method, Q, A, R, FMT)]
    fresh = encode_rows(rows, tok, 96, True, "")
    cache = tmp_path / "tokens"
    first = encode_rows_cached(rows, tok, 96, True, "", cache)
    assert first == fresh and len(list(cache.glob("*.npz"))) == 1
    assert encode_rows_cached(rows, tok, 96, True, "", cache) == fresh  # from the file
    assert len(list(cache.glob("*.npz"))) == 1
    for change in ({"max_length": 48}, {"label_sem": False}, {"system": None},
                   {"rows": rows[:-1]}, {"rows": [{**rows[0], "emb_row": 9}, *rows[1:]]}):
        args = {"rows": rows, "max_length": 96, "label_sem": True, "system": "", **change}
        got = encode_rows_cached(args["rows"], tok, args["max_length"], args["label_sem"],
                                 args["system"], cache)
        assert got == encode_rows(args["rows"], tok, args["max_length"], args["label_sem"],
                                  args["system"])
    assert len(list(cache.glob("*.npz"))) == 6  # one entry per distinct input
    for path in cache.glob("*.npz"):
        path.write_bytes(b"damaged")
    assert encode_rows_cached(rows, tok, 96, True, "", cache) == fresh  # tokenised again
