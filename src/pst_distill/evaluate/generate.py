"""Greedy, batched, left-padded generation with the stops each method needs: answer-first
methods stop at the rationale delimiter or [SEM] (:func:`pst_distill.formats.stop_strings`);
think-first completions stop at the end of their answer line (:class:`AnswerLineStop`)."""

from __future__ import annotations

import time

import torch

from pst_distill.formats import ANSWER_FIRST
from pst_distill.models import decode_completion


def max_new_tokens(method: str, cfg) -> int:
    if method in ANSWER_FIRST and not cfg.generate_rationale:
        return cfg.max_new_tokens
    return cfg.max_new_tokens_rationale


def newline_ids(tok) -> list[int]:
    """The token ids whose text holds a newline, found once per tokenizer."""
    cached = getattr(tok, "_pst_newline_ids", None)
    if cached is None:
        texts = tok.batch_decode([[i] for i in range(len(tok))])
        cached = [i for i, text in enumerate(texts) if "\n" in text]
        tok._pst_newline_ids = cached
    return cached


class AnswerLineStop:
    """A transformers stopping criterion: a row is done once its completion holds a whole
    answer line (``answer_prefix`` … newline), the end of a think-first completion.

    O(1) per row and step: the newest tokens are tested against the newline token ids on the
    device, with one host sync per step (``any``); only a row whose newest token holds a
    newline is decoded, and only from the newline before it (its current line), so the cost
    does not grow with the completion. Finished rows are never looked at again.
    """

    def __init__(self, tok, answer_prefix: str, width: int):
        self.tok, self.prefix, self.width = tok, answer_prefix, width
        self.newlines = self.done = self.line_start = None

    def __call__(self, input_ids, scores, **kwargs):
        if self.done is None:
            device = input_ids.device
            self.newlines = torch.tensor(newline_ids(self.tok), device=device)
            self.done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=device)
            self.line_start = [self.width] * input_ids.shape[0]
        event = torch.isin(input_ids[:, -1], self.newlines) & ~self.done
        if bool(event.any()):
            end = input_ids.shape[1]
            for i in event.nonzero().flatten().tolist():
                # from the token that ended the previous line (its text may carry the
                # start of this one) to the newline just generated
                text = self.tok.decode(input_ids[i, self.line_start[i]:end])
                if answer_line_end(text, self.prefix) is not None:
                    self.done[i] = True
                self.line_start[i] = end - 1
        return self.done.clone()


def answer_line_end(text: str, answer_prefix: str) -> int | None:
    """The index just past the newline that ends the first answer line, or None."""
    start = text.find(answer_prefix)
    end = -1 if start < 0 else text.find("\n", start)
    return None if end < 0 else end + 1


def generate_batch(model, tok, prompts: list[str], stops: list[str], max_new: int,
                   scores: bool = False, suppress: list[int] | None = None,
                   answer_line: str | None = None) -> list[dict]:
    """Greedy completions of one left-padded batch: text, token count, finish reason; with
    ``scores``, each generated token's log-probability and top-1 minus top-2 probability
    margin (``token_logprobs``, ``token_margins``, ``token_ids``). ``suppress``: token ids
    never generated (the adaptive student's mode controls); ``answer_line``: the answer
    prefix, to stop each row after its first answer line (:class:`AnswerLineStop`)."""
    from transformers import StoppingCriteriaList

    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    width = enc["input_ids"].shape[1]
    extra = {"suppress_tokens": suppress} if suppress else {}
    if answer_line:
        extra["stopping_criteria"] = StoppingCriteriaList([AnswerLineStop(tok, answer_line, width)])
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, top_p=None, top_k=None,
                             temperature=None, pad_token_id=tok.pad_token_id,
                             stop_strings=stops or None, tokenizer=tok if stops else None,
                             return_dict_in_generate=True, output_logits=scores, **extra)
    rows = out.sequences[:, width:]
    results = [_finish(row, tok, stops, answer_line) for row in rows.tolist()]
    if scores:
        for res, extra_fields in zip(results, _token_scores(out.logits, rows, suppress)):
            res.update(extra_fields)
    return results


def _token_scores(logits, rows, suppress) -> list[dict]:
    """Per row: generated ids, their log-probabilities and probability margins (from the
    raw logits; suppressed tokens excluded, as generation excluded them)."""
    lp = torch.stack(logits, 1).float()  # [B, T, V]
    if suppress:
        lp[..., suppress] = float("-inf")
    lp = torch.log_softmax(lp, -1)
    chosen = lp.gather(-1, rows[:, : lp.size(1)].unsqueeze(-1)).squeeze(-1)
    top2 = lp.topk(2, -1).values.exp()
    margin = top2[..., 0] - top2[..., 1]
    return [{"token_ids": r.tolist(), "token_logprobs": c.tolist(), "token_margins": m.tolist()}
            for r, c, m in zip(rows[:, : lp.size(1)], chosen, margin)]


def _finish(row: list[int], tok, stops: list[str], answer_line: str | None = None) -> dict:
    # special tokens kept: [SEM] is one, and a stop string
    text, n, finish = decode_completion(row, tok, stops, skip_special_tokens=False)
    end = answer_line_end(text, answer_line) if answer_line else None
    if end is not None:  # stopped by AnswerLineStop (the row is padded after its newline)
        text, finish = text[:end], "stop"
    # the EOS the model wrote counts as generated (a row cut at a stop string is padded)
    return {"text": text.strip(), "generated_tokens": n + int(finish == "eos"),
            "finish_reason": finish}


def generate_prompts(model, tok, prompts: list[str], stops: list[str], max_new: int,
                     batch_size: int, desc: str, **kwargs) -> list[dict]:
    """:func:`generate_batch` over ``prompts`` (longest first, so batches pad little), in
    their order, each with its share of its batch's generation time (``seconds``)."""
    from tqdm.auto import tqdm

    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    results: list[dict | None] = [None] * len(prompts)
    bar = tqdm(total=len(prompts), desc=desc, unit="q")
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        t0 = time.perf_counter()
        batch = generate_batch(model, tok, [prompts[i] for i in idx], stops, max_new, **kwargs)
        seconds = (time.perf_counter() - t0) / len(idx)
        for i, res in zip(idx, batch):
            results[i] = {**res, "seconds": seconds}
        bar.update(len(idx))
    bar.close()
    return results


def time_alone(model, tok, prompts: list[str], stops: list[str], max_new: int, desc: str,
               **kwargs) -> list[dict]:
    """Each prompt generated on its own (batch 1), timed: the seconds a single question
    waits, which a batched pass does not show (there the prompts' forward pass, shared by
    every method, dominates a short answer). One untimed warm-up generation first, so no
    one-time cost lands on the first question."""
    if prompts:
        generate_batch(model, tok, prompts[:1], stops, min(max_new, 2), **kwargs)
    return generate_prompts(model, tok, prompts, stops, max_new, 1, desc, **kwargs)
