"""Teacher through transformers: batched, left-padded, chat template, stop at the answer line."""

from __future__ import annotations

import logging
import re
from typing import Iterator

from pst_distill.models import decode_completion
from pst_distill.teacher.base import (Completion, Request, Sampling, TeacherBackend,
                                      request_seed)

log = logging.getLogger(__name__)


def answer_line_regex(answer_prefix: str) -> re.Pattern:
    """A complete answer line: the prefix, some answer, then a newline."""
    return re.compile(rf"(?im)^\s*{re.escape(answer_prefix)}[ \t]*\S[^\n]*\n")


def make_stopping_criteria(tokenizer, prompt_len: int, answer_prefix: str, stop: tuple[str, ...]):
    import torch
    from transformers import StoppingCriteria

    pattern = answer_line_regex(answer_prefix)
    window = 64  # tokens of tail to re-read; an answer line is far shorter

    class AnswerLineStop(StoppingCriteria):
        """Per row: done once the answer line is complete or a stop string appears.

        Only rows whose newest token holds a newline (or ends a stop string) are decoded
        again, and only their tail: the check stays cheap at every step.
        """

        def __init__(self):
            self.done = None

        def __call__(self, input_ids, scores, **kwargs):
            if self.done is None:
                self.done = [False] * input_ids.shape[0]
            newest = tokenizer.batch_decode(input_ids[:, -1:], skip_special_tokens=True)
            start = max(prompt_len, input_ids.shape[1] - window)
            for i, tok_text in enumerate(newest):
                if self.done[i] or not ("\n" in tok_text or any(s[-1:] in tok_text for s in stop)):
                    continue
                tail = tokenizer.decode(input_ids[i, start:], skip_special_tokens=True)
                self.done[i] = bool(pattern.search(tail)) or any(s in tail for s in stop)
            return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)

    return AnswerLineStop()


def make_row_sampler(seeds: list[int], temperature: float, top_p: float):
    """A logits processor that samples row i's next token with its own ``torch.Generator``
    seeded with ``seeds[i]``, and leaves that token as the row's only finite score.

    transformers' own sampling draws the whole batch from the global RNG, so a row's text
    would depend on which rows share its batch. Here each row takes one uniform draw per
    step from its generator and picks the token where it falls in the row's distribution
    (temperature, then top-p), accumulated in vocabulary order in float64, so the
    choice does not hinge on how near-equal probabilities happen to sort. Run it with
    ``do_sample=False``: the greedy pick is then the sampled token.
    """
    import torch
    from transformers import LogitsProcessor

    class RowSampler(LogitsProcessor):
        def __init__(self):
            self.generators = [torch.Generator().manual_seed(s) for s in seeds]

        def __call__(self, input_ids, scores):
            probs = torch.softmax(scores.double() / temperature, dim=-1)
            if top_p < 1.0:
                ranked, order = probs.sort(dim=-1, descending=True, stable=True)
                above = ranked.cumsum(dim=-1) - ranked  # mass ranked before each token
                probs = probs.scatter(-1, order, ranked.masked_fill(above >= top_p, 0.0))
            cdf = probs.cumsum(dim=-1)
            u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64)
                           for g in self.generators]).to(cdf.device)
            pick = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True)
            pick = pick.clamp_(max=cdf.shape[1] - 1)
            return torch.full_like(scores, float("-inf")).scatter_(1, pick, 0.0)

    return RowSampler()


def trim_completion(text: str, answer_prefix: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Cut the text after the first answer line or stop string; say whether it stopped."""
    cut = len(text)
    for s in stop:
        if s and s in text:
            cut = min(cut, text.index(s))
    m = answer_line_regex(answer_prefix).search(text + "\n")
    if m:
        cut = min(cut, m.end() - 1)
    return text[:cut].rstrip(), cut < len(text) or bool(m)


class TransformersBackend(TeacherBackend):
    name = "transformers"

    def __init__(self, cfg, answer_prefix: str):
        super().__init__(cfg, answer_prefix)
        from pst_distill.models import load_tokenizer

        # the tokenizer renders prompts (cache keys); the model loads only if a key is missing
        self.tokenizer = load_tokenizer(cfg.model, cfg.revision, cfg.trust_remote_code)
        self._model = None

    @property
    def model(self):
        if self._model is None:
            from pst_distill.models import load_causal_lm

            self._model, self.tokenizer = load_causal_lm(
                self.cfg.model, self.cfg.revision, self.cfg.device, self.cfg.dtype,
                self.cfg.trust_remote_code)
        return self._model

    def metadata(self) -> dict:
        import torch
        import transformers

        from pst_distill.models import pick_device

        return {**super().metadata(), "transformers": transformers.__version__,
                "torch": torch.__version__, "device": pick_device(self.cfg.device)}

    def generate(self, requests: list[Request], sampling: Sampling) -> Iterator[Completion]:
        _ = self.model  # loads the model and its padded tokenizer (left padding, pad token)
        prompts = {r.key: r.prompt or self.render(r.messages) for r in requests}
        # longest first: similar lengths share a batch, so less padding
        order = sorted(requests, key=lambda r: -len(prompts[r.key]))
        bs = self.cfg.batch_size
        for start in range(0, len(order), bs):
            batch = order[start:start + bs]
            yield from self._generate_batch(batch, [prompts[r.key] for r in batch], sampling)

    def _generate_batch(self, batch, texts, sampling: Sampling) -> Iterator[Completion]:
        import torch

        tok = self.tokenizer
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(self.model.device)
        prompt_len = enc["input_ids"].shape[1]
        # sampling: each row draws from its own generator, seeded by its request key, so its
        # text does not depend on the rows it shares a batch with (resume, batch_size).
        # Decoding itself stays greedy: the sampler leaves one token per row to pick.
        sampler = [] if sampling.temperature <= 0 else [make_row_sampler(
            [request_seed(sampling.seed, r.key) for r in batch], sampling.temperature,
            sampling.top_p)]
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=sampling.max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                logits_processor=sampler,
                pad_token_id=tok.pad_token_id,
                stopping_criteria=[make_stopping_criteria(
                    tok, prompt_len, self.answer_prefix, sampling.stop)],
            )
        for i, req in enumerate(batch):
            n_prompt = int(enc["attention_mask"][i].sum())
            text, n_new, end = decode_completion(out[i, prompt_len:], tok)
            text, stopped = trim_completion(text, self.answer_prefix, sampling.stop)
            finish = "length" if end == "length" and not stopped else "stop"
            yield Completion(key=req.key, text=text, finish_reason=finish,
                             prompt_tokens=n_prompt, completion_tokens=n_new,
                             prompt=texts[i])

    def close(self) -> None:
        self._model = None
