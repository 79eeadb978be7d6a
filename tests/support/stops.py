"""Test support: the think-first stopping rule stepped as ``generate`` steps it, and the rule
by definition, to compare the two on the same completions."""

from __future__ import annotations


def quadratic_stop_steps(tok, rows: list[list[int]], width: int, prefix: str) -> list[int | None]:
    """The rule by definition: decode every whole completion at every step (the stop this
    project used before the incremental one); the step each row is first done, or None."""
    from pst_distill.evaluate.generate import answer_line_end

    steps: list[int | None] = [None] * len(rows)
    for t in range(width + 1, max(map(len, rows)) + 1):
        for i, row in enumerate(rows):
            if steps[i] is None and answer_line_end(tok.decode(row[width:t]), prefix) is not None:
                steps[i] = t
    return steps


def incremental_stop_steps(tok, rows: list[list[int]], width: int, prefix: str,
                           pad: int = 0) -> list[int | None]:
    """AnswerLineStop called as generate calls it: one growing batch, one token per step."""
    import torch

    from pst_distill.evaluate.generate import AnswerLineStop

    longest = max(map(len, rows))
    batch = torch.tensor([r + [pad] * (longest - len(r)) for r in rows])
    stop, steps = AnswerLineStop(tok, prefix, width), [None] * len(rows)
    for t in range(width + 1, longest + 1):
        for i, done in enumerate(stop(batch[:, :t], None).tolist()):
            if done and steps[i] is None:
                steps[i] = t
    return steps
