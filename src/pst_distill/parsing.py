"""Answer extraction: a named pipeline, shared by the teacher and the evaluator.

    text --strict-->   the answer line ("Answer: X", "The answer is X", "#### X")
         --flexible--> the last thing of the right type anywhere in the text
         --normalise-> canonical string per answer type
         fallback      INVALID ("[invalid]") when nothing matches

Both scores are reported side by side; a parse failure is counted, never guessed.
Model output is only ever matched with regular expressions, never evaluated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

INVALID = "[invalid]"
ANSWER_TYPES = ("number", "yes-no", "choice", "text")

_NUMBER = r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\.\d+"
_STRICT_PATTERNS = [
    # the delimiter we train and prompt with, then the usual CoT endings
    r"(?im)^\s*answer\s*[:：]\s*(?P<ans>.+?)\s*$",
    r"(?i)the (?:final )?answer is[:\s]*(?P<ans>[^\n]+?)\s*(?:\.\s*)?$",
    r"(?m)^####\s*(?P<ans>.+?)\s*$",
]
_YES_NO = {"yes": "yes", "no": "no", "true": "yes", "false": "no"}


@dataclass(frozen=True)
class Extraction:
    strict: str
    flexible: str

    @property
    def parsed(self) -> bool:
        return self.flexible != INVALID


def normalize(value: str, answer_type: str) -> str:
    """Canonical form of an answer of ``answer_type``; INVALID if it is not one."""
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"unknown answer_type {answer_type!r}; allowed: {ANSWER_TYPES}")
    value = str(value).strip()
    if answer_type == "number":
        m = re.search(_NUMBER, value)
        if not m:
            return INVALID
        num = m.group(0).replace(",", "").replace("$", "").replace(" ", "")
        try:
            x = float(num)
        except ValueError:
            return INVALID
        return str(int(x)) if x == int(x) else repr(round(x, 6))
    if answer_type == "yes-no":
        m = re.search(r"(?i)\b(yes|no|true|false)\b", value)
        return _YES_NO[m.group(1).lower()] if m else INVALID
    if answer_type == "choice":
        m = re.search(r"\(?\b([A-Ja-j])\b\)?", value)
        return m.group(1).upper() if m else INVALID
    text = re.sub(r"[\"'`.*]+", "", value).strip().lower()
    return text if text else INVALID


def _strict(text: str, answer_type: str) -> str:
    for pattern in _STRICT_PATTERNS:
        matches = list(re.finditer(pattern, text))
        if matches:
            return normalize(matches[-1].group("ans"), answer_type)
    return INVALID


def _flexible(text: str, answer_type: str) -> str:
    if answer_type == "number":
        found = re.findall(_NUMBER, text)
        return normalize(found[-1], answer_type) if found else INVALID
    if answer_type == "yes-no":
        found = re.findall(r"(?i)\b(yes|no|true|false)\b", text)
        return _YES_NO[found[-1].lower()] if found else INVALID
    if answer_type == "choice":
        found = re.findall(r"\(([A-J])\)|\b([A-J])\b", text)
        return (found[-1][0] or found[-1][1]) if found else INVALID
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return normalize(lines[-1], answer_type) if lines else INVALID


def extract_answer(text: str, answer_type: str) -> Extraction:
    """Run the strict → flexible pipeline; the flexible result falls back to strict's."""
    strict = _strict(text, answer_type)
    flexible = strict if strict != INVALID else _flexible(text, answer_type)
    return Extraction(strict=strict, flexible=flexible)


def split_answer_line(text: str) -> tuple[str, str | None]:
    """Split a CoT completion into (rationale, raw answer line) at its last answer line.

    Everything after the answer line is dropped: the teacher is stopped there.
    """
    matches = list(re.finditer(_STRICT_PATTERNS[0], text))
    if not matches:
        return text.strip(), None
    last = matches[-1]
    return text[: last.start()].strip(), last.group("ans").strip()


def is_correct(pred: str, gold: str, answer_type: str) -> bool:
    return pred != INVALID and pred == normalize(gold, answer_type)
