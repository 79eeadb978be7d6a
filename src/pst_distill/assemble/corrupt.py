"""Rationale corruption for the robustness check (``assemble.corrupt_frac``/``corrupt_mode``).

PST's claim is that answer-first students are less hurt by hallucinated rationales than
rationale-first ones. To measure it, a seeded fraction of the training rationales is
corrupted once, before assembly, so every method sees exactly the same corrupted items
(the question and the gold answer are never changed; only the rationale text is):

- ``numbers``: every number in the rationale (integers, ``1,200``-style thousands and
  decimals; not digits inside words such as ``x2``) moves by an offset drawn uniformly
  from {-3, -2, -1, 1, 2, 3}, independently per occurrence; an offset that would make it
  negative is applied upwards instead, decimals keep their fractional digits and thousands
  separators are dropped. The arithmetic of the rationale becomes wrong while its words
  stay. Eligible: rationales with at least one number.
- ``swap``: two distinct entities exchange places at every occurrence in the rationale.
  The entities are taken from the first tier with at least two distinct values: quoted
  strings (``"Ada"``), else numbers, else names (capitalised words that also occur in the
  question), else any two words; the pair is drawn uniformly from that tier. Facts are
  attributed to the wrong entity while the wording stays. Eligible: rationales with such
  a pair.
- ``shuffle``: the whole rationale is replaced by the clean rationale of another question,
  drawn uniformly from the same task (from any task if the task has no other question).
  The reasoning is fluent but about something else. Eligible: any rationale with a donor.

Which records are corrupted: only rationales the mode can change are eligible;
``round(frac * n)`` of them are drawn with ``random.Random(seed)`` (or all eligible ones if
fewer, with the shortfall in the stats). Each edit uses its own generator seeded by
``(seed, key, mode)``, so one record's edit does not depend on which others were drawn.

The corrupted copy keeps its generation ``key`` and gets ``corrupted: true``; ``shuffle``
also records ``donor_key``. Which embedding becomes PST's semantic target is decided by
the assembly (``assemble.semantic_target``, see :mod:`pst_distill.assemble`): by default
the embedding of the corrupted text the student sees, so no method gets clean information
the others lack.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter, defaultdict
from typing import Callable, Optional

from pst_distill.io import content_hash

log = logging.getLogger(__name__)

MODES = ("numbers", "swap", "shuffle")
MAX_OFFSET = 3
NUMBER = re.compile(r"(?<![\w.,])\d+(?:,\d{3})*(?:\.\d+)?(?!\w)")
QUOTED = re.compile(r'"[^"\n]+"')
CAPITALISED = re.compile(r"\b[A-Z][a-z]+\b")
WORD = re.compile(r"\b[A-Za-z]+\b")


# ------------------------------------------------------------------ text edits
def shift_numbers(text: str, rng: random.Random) -> str:
    """Move every number by a nonzero offset in [-MAX_OFFSET, MAX_OFFSET], never below 0."""
    def shift(m: re.Match) -> str:
        whole, _, frac = m.group().replace(",", "").partition(".")
        off = rng.choice([o for o in range(-MAX_OFFSET, MAX_OFFSET + 1) if o])
        new = int(whole) + off if int(whole) + off >= 0 else int(whole) + abs(off)
        return f"{new}.{frac}" if frac else str(new)

    return NUMBER.sub(shift, text)


def _swap_tiers(question: str) -> list[tuple[re.Pattern, Callable[[str], bool]]]:
    names = set(CAPITALISED.findall(question))
    return [(QUOTED, lambda v: True), (NUMBER, lambda v: True),
            (CAPITALISED, lambda v: v in names), (WORD, lambda v: True)]


def swap_candidates(text: str, question: str) -> Optional[tuple[re.Pattern, list[str]]]:
    """The first tier with at least two distinct values, or None."""
    for pattern, keep in _swap_tiers(question):
        values = sorted({v for v in pattern.findall(text) if keep(v)})
        if len(values) >= 2:
            return pattern, values
    return None


def swap_entities(text: str, question: str, rng: random.Random) -> Optional[str]:
    """Swap two distinct entities everywhere in ``text``; None if there is nothing to swap."""
    found = swap_candidates(text, question)
    if found is None:
        return None
    pattern, values = found
    a, b = rng.sample(values, 2)
    return pattern.sub(lambda m: {a: b, b: a}.get(m.group(), m.group()), text)


# -------------------------------------------------------------- record level
def _eligible(rec: dict, mode: str, donors: dict[str, list[dict]]) -> bool:
    if mode == "numbers":
        return NUMBER.search(rec["rationale"]) is not None
    if mode == "swap":
        return swap_candidates(rec["rationale"], rec["question"]) is not None
    return bool(_donor_pool(rec, donors))


def _donor_pool(rec: dict, donors: dict[str, list[dict]]) -> list[dict]:
    same = [d for d in donors.get(rec["task"], []) if d["id"] != rec["id"]]
    if same:
        return same
    return [d for task in sorted(donors) for d in donors[task] if d["id"] != rec["id"]]


def _corrupt_one(rec: dict, mode: str, seed: int, donors: dict[str, list[dict]]) -> dict:
    # a per-record generator: one record's edit does not depend on which others were picked
    rng = random.Random(content_hash(seed, rec["key"], mode))
    out = {**rec, "corrupted": True}
    if mode == "numbers":
        out["rationale"] = shift_numbers(rec["rationale"], rng)
    elif mode == "swap":
        out["rationale"] = swap_entities(rec["rationale"], rec["question"], rng)
    else:
        donor = rng.choice(_donor_pool(rec, donors))
        out.update(rationale=donor["rationale"], donor_key=donor["key"])
    return out


def corrupt_records(records: list[dict], frac: float, mode: str,
                    seed: int) -> tuple[list[dict], dict]:
    """Copies of ``records`` with ``corrupted`` set; a seeded subset corrupted (see above)."""
    if mode not in MODES:
        raise ValueError(f"unknown corrupt mode {mode!r}; allowed: {', '.join(MODES)}")
    out = [{**r, "corrupted": False} for r in records]
    requested = round(frac * len(records))
    stats = {"mode": mode, "frac": frac, "requested": requested, "eligible": 0, "corrupted": 0,
             "per_task": {}}
    if requested == 0:
        return out, stats
    donors = defaultdict(list)
    for r in sorted(records, key=lambda r: r["key"]):
        donors[r["task"]].append(r)
    eligible = sorted(r["key"] for r in records if _eligible(r, mode, donors))
    chosen = set(random.Random(seed).sample(eligible, min(requested, len(eligible))))
    out = [_corrupt_one(r, mode, seed, donors) if r["key"] in chosen else o
           for r, o in zip(records, out)]
    if len(chosen) < requested:
        log.warning("corrupt_mode %s can change only %d of %d rationales; %d requested",
                    mode, len(eligible), len(records), requested)
    per_task = Counter(o["task"] for o in out if o["corrupted"])
    stats.update(eligible=len(eligible), corrupted=len(chosen), per_task=dict(sorted(per_task.items())))
    return out, stats
