"""Answer extraction: a named pipeline, shared by the teacher and the evaluator.

    text --strict-->   an answer marker, in this order of trust:
                         1. the configured prefix (``common.format.answer_prefix``), anywhere
                            in a line, bold or not ("**Answer:** 15", "… dollars. Answer: 18",
                            "Final Answer: 15"); its value may sit on the next line
                         2. ``\\boxed{…}``
                         3. "#### X" (GSM8K), unless it is a markdown heading ("#### Step 1")
                         4. "… the answer is X"
                       within a kind, the last marker whose value is of the answer type wins
         --flexible--> the last value of the right type anywhere in the text
         --normalise-> canonical string per answer type
         fallback      INVALID ("[invalid]") when nothing matches

A marker other than the configured prefix is not strict: with ``answer_prefix: "Final
answer:"`` a bare "Answer: 12" line is found by the flexible pass only. Both scores are
reported side by side; a parse failure is counted, never guessed. Model output is only
ever matched with regular expressions, never evaluated.

Numbers: a sign glued to the digits (``-``, U+2212 minus, en dash, not after a term:
"10 − 3" is 3, "−3" is -3), currency before and units after ("$1,200.50", "18 dollars",
"15%"), thousands grouped by commas or (thin, no-break) spaces ("2 350" is 2350; groups
are three digits, so "3 apples 4 pears" stays apart), decimals, fractions ("3/4", LaTeX
``\\frac``). Canonical form: an integer, else a decimal rounded to 6 places.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache

INVALID = "[invalid]"
ANSWER_TYPES = ("number", "yes-no", "choice", "text")

# ------------------------------------------------------------------ answer markers
_VALUE = r"[*_]*[ \t]*(?:\n\s*)?(?P<ans>\S[^\n]*)"  # bold close, then the rest of the line
_BOXED = re.compile(r"\\boxed\s*\{(?P<ans>(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*)\}")
_HASHES = re.compile(  # "#### 72", "#### yes"; not a heading such as "#### **Step 1**: …"
    r"(?m)####[ \t]*(?P<ans>[*_]*(?:[^\sA-Za-z*_]|[A-Za-z]+[*_ \t.!]*$)[^\n]*)")
_ANSWER_IS = re.compile(r"(?i)\banswer\s+is\b[ \t]*[:：]?" + _VALUE)


def _prefix_pattern(prefix: str) -> str:
    """The prefix as a marker: any case, flexible spaces, bold around it, "Final " before."""
    words = prefix.strip()
    colon = ""
    if words[-1] in ":：":
        words, colon = words[:-1].rstrip(), r"[*_]*[ \t]*[:：]"
    body = r"\s+".join(re.escape(w) for w in words.split()) + colon
    # starts a word, and a run of markdown only at its start (else a long run is quadratic)
    lead = r"(?<![\w#*])" if words[:1].isalnum() else r"(?<![#*_])"
    return rf"(?i){lead}(?:[#*_]+[ \t]?)?(?:final\s+)?{body}{_VALUE}"


@lru_cache(maxsize=16)
def answer_markers(answer_prefix: str = "Answer:") -> tuple[re.Pattern, ...]:
    """The strict markers, most trusted first."""
    if not answer_prefix.strip():
        raise ValueError("answer_prefix must not be blank")
    return re.compile(_prefix_pattern(answer_prefix)), _BOXED, _HASHES, _ANSWER_IS


# ------------------------------------------------------------------ text clean-up
_LATEX = [
    (re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}"), r"\1/\2"),
    (_BOXED, r"\g<ans>"),
    (re.compile(r"\\(?:text|mathrm|textbf|mathbf)\s*\{([^{}]*)\}"), r"\1"),
    (re.compile(r"\\[,;: ]"), "\u2009"),  # LaTeX spaces group thousands: 2\,350
    (re.compile(r"\{,\}"), ","),
    (re.compile(r"\\([$%])"), r"\1"),
    (re.compile(r"\\(?:left|right)\b"), ""),
]
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def _unlatex(text: str) -> str:
    for pattern, repl in _LATEX:
        text = pattern.sub(repl, text)
    return text


def _segment(raw: str) -> str:
    """A marker's value: LaTeX unwrapped, cut at the end of its sentence."""
    return _SENTENCE_END.split(_unlatex(raw), maxsplit=1)[0]


# ------------------------------------------------------------------ values per type
_SIGNS = "-\u2212\u2013\ufe63\uff0d"  # hyphen-minus, minus, en dash, small and wide minus
_NUMBER = re.compile(
    rf"(?:(?<![\w.)\]}}])(?P<sign>[{_SIGNS}]))?"  # a sign glued on, not after a term
    rf"(?:[$€£¥₹][ \t]?(?P<sign2>[{_SIGNS}])?)?"  # currency, then maybe a sign: $-5
    r"(?=\.?\d)"
    r"(?P<int>\d{1,3}(?:,\d{3})+(?!\d)"  # 1,234,567
    r"|\d{1,3}(?:[ \u00a0\u2009\u202f]\d{3})+(?![\w-])"  # 2 350 (not "2 100-meter")
    r"|\d+)?"
    r"(?P<dec>\.\d+)?"
    r"(?:[ \t]*/[ \t]*(?P<den>[1-9]\d*)(?!\d|[.,]\d))?"  # 3/4
)
_MAX_DIGITS = 64
_YES_NO_RE = re.compile(r"(?i)\b(yes|no|true|false)\b")
_YES_NO = {"yes": "yes", "no": "no", "true": "yes", "false": "no"}
_CHOICE_MARKED = re.compile(
    r"\(([A-Ja-j])\)|(?<![\w(])([A-Ja-j])\)|(?i:option|choice)\s*\(?([A-Ja-j])\b")
_CHOICE_BARE = re.compile(r"(?<![\w'’])([A-J])(?![\w'’])(\s+[a-z])?")
_TEXT_NOISE = re.compile(r"[\"'`.*_$“”‘’]+")


def _canonical_number(m: re.Match) -> str | None:
    digits = re.sub(r"\D", "", m["int"] or "0") + (m["dec"] or "")
    if len(digits) > _MAX_DIGITS or len(m["den"] or "") > _MAX_DIGITS:
        return None  # a digit run, not an answer (and int() refuses very long ones)
    x = Fraction(digits)
    if m["den"]:
        x /= int(m["den"])
    if m["sign"] or m["sign2"]:
        x = -x
    if x.denominator == 1:
        return str(x.numerator)
    x = round(x, 6)
    text = format(Decimal(x.numerator) / Decimal(x.denominator), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _numbers(text: str) -> list[str]:
    found = (_canonical_number(m) for m in _NUMBER.finditer(text))
    return [x for x in found if x is not None]


def _yes_nos(text: str) -> list[str]:
    return [_YES_NO[w.lower()] for w in _YES_NO_RE.findall(text)]


def _choices(text: str) -> list[str]:
    """Letters in "(B)", "B)", "option B"; else bare capitals, not the words "I"/"A"."""
    marked = [next(g for g in m.groups() if g).upper() for m in _CHOICE_MARKED.finditer(text)]
    if marked:
        return marked
    return [m[1] for m in _CHOICE_BARE.finditer(text) if not (m[1] in "AI" and m[2])]


def _text(value: str) -> list[str]:
    text = " ".join(_TEXT_NOISE.sub("", _unlatex(value)).split()).strip(" ,;:!?").lower()
    return [text] if text else []


def _values(text: str, answer_type: str) -> list[str]:
    """Every value of ``answer_type`` in ``text``, in order; a text answer is all of it."""
    if answer_type == "number":
        return _numbers(_unlatex(text))
    if answer_type == "yes-no":
        return _yes_nos(text)
    if answer_type == "choice":
        found = _choices(_unlatex(text))
        lone = re.fullmatch(r"\W*([a-j])\W*", text)
        return found or ([lone[1].upper()] if lone else [])
    return _text(text)


def _check_type(answer_type: str) -> None:
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"unknown answer_type {answer_type!r}; allowed: {ANSWER_TYPES}")


def normalize(value: str, answer_type: str) -> str:
    """Canonical form of the first answer of ``answer_type`` in ``value``; INVALID if none."""
    _check_type(answer_type)
    found = _values(str(value).strip(), answer_type)
    return found[0] if found else INVALID


# ------------------------------------------------------------------ the pipeline
def _strict(text: str, answer_type: str, answer_prefix: str) -> str:
    for marker in answer_markers(answer_prefix):
        for m in reversed(list(marker.finditer(text))):
            value = normalize(_segment(m["ans"]), answer_type)
            if value != INVALID:
                return value
    return INVALID


def _flexible(text: str, answer_type: str) -> str:
    if answer_type == "text":
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return normalize(lines[-1], answer_type) if lines else INVALID
    found = _values(text, answer_type)
    return found[-1] if found else INVALID


@dataclass(frozen=True)
class Extraction:
    strict: str
    flexible: str

    @property
    def parsed(self) -> bool:
        return self.flexible != INVALID


def extract_answer(text: str, answer_type: str, answer_prefix: str = "Answer:") -> Extraction:
    """strict -> flexible -> normalise -> INVALID; flexible is strict's answer when there is one."""
    _check_type(answer_type)
    strict = _strict(text, answer_type, answer_prefix)
    flexible = strict if strict != INVALID else _flexible(text, answer_type)
    return Extraction(strict=strict, flexible=flexible)


def split_answer_line(text: str, answer_prefix: str = "Answer:") -> tuple[str, str | None]:
    """Split a CoT completion into (rationale, raw answer) at its last ``answer_prefix`` marker.

    Everything after the answer line is dropped: the teacher is stopped there.
    """
    matches = list(answer_markers(answer_prefix)[0].finditer(text))
    if not matches:
        return text.strip(), None
    last = matches[-1]
    return text[: last.start()].strip(), last["ans"].strip(" \t*_")


def is_correct(pred: str, gold: str, answer_type: str) -> bool:
    return pred != INVALID and pred == normalize(gold, answer_type)
