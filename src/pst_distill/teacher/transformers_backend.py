"""Teacher through transformers: batched, left-padded, chat template, stop at the answer line."""

from __future__ import annotations

import logging
import re
from typing import Iterator

from pst_distill.io import content_hash
from pst_distill.teacher.base import Completion, Request, Sampling, TeacherBackend

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
        from transformers import AutoTokenizer

        from pst_distill.models import resolve_model

        # the tokenizer renders prompts (cache keys); the model loads only if a key is missing
        self.tokenizer = AutoTokenizer.from_pretrained(
            resolve_model(cfg.model), revision=cfg.revision,
            trust_remote_code=cfg.trust_remote_code)
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
        # one seed per batch, derived from its content: reruns of a batch are reproducible
        torch.manual_seed(int(content_hash(sampling.seed, [r.key for r in batch])[:8], 16))
        sample = sampling.temperature > 0
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=sampling.max_new_tokens,
                do_sample=sample,
                temperature=sampling.temperature if sample else None,
                top_p=sampling.top_p if sample else None,
                top_k=None,
                pad_token_id=tok.pad_token_id,
                stopping_criteria=[make_stopping_criteria(
                    tok, prompt_len, self.answer_prefix, sampling.stop)],
            )
        for i, req in enumerate(batch):
            new = out[i, prompt_len:].tolist()
            n_prompt = int(enc["attention_mask"][i].sum())
            eos_hit = tok.eos_token_id in new
            if eos_hit:
                new = new[: new.index(tok.eos_token_id)]
            while new and new[-1] == tok.pad_token_id:
                new.pop()
            text, stopped = trim_completion(
                tok.decode(new, skip_special_tokens=True), self.answer_prefix, sampling.stop)
            finish = "stop" if (eos_hit or stopped) else "length"
            yield Completion(key=req.key, text=text, finish_reason=finish,
                             prompt_tokens=n_prompt, completion_tokens=len(new),
                             prompt=texts[i])

    def close(self) -> None:
        self._model = None
