"""The extraction pipeline: strict, then flexible, then the [invalid] fallback."""

import pytest

from pst_distill.parsing import INVALID, extract_answer, is_correct, normalize, split_answer_line


@pytest.mark.parametrize("text,atype,strict,flexible", [
    ("12 + 7 = 19.\nAnswer: 19", "number", "19", "19"),
    ("So it costs $1,630.\nAnswer: $1,630", "number", "1630", "1630"),
    ("The answer is 42.", "number", "42", "42"),
    ("Natalia sold 48/2 = 24 clips.\n#### 72", "number", "72", "72"),
    ("Answer: 3.50", "number", "3.5", "3.5"),
    ("Answer: -4", "number", "-4", "-4"),
    # flexible only: no answer line, take the last number
    ("First 3 + 4 = 7, then 7 * 2 = 14", "number", INVALID, "14"),
    ("The coin is tails up, so no.", "yes-no", INVALID, "no"),
    ("Answer: Yes", "yes-no", "yes", "yes"),
    ("Answer: False", "yes-no", "no", "no"),
    ("Answer: (C)", "choice", "C", "C"),
    ("It must be (B) because ...", "choice", INVALID, "B"),
    ("Answer: F", "choice", "F", "F"),
    ('Answer: "NK".', "text", "nk", "nk"),
    ("I am not sure.", "number", INVALID, INVALID),
    ("", "yes-no", INVALID, INVALID),
    ("maybe", "choice", INVALID, INVALID),
])
def test_extraction(text, atype, strict, flexible):
    ext = extract_answer(text, atype)
    assert (ext.strict, ext.flexible) == (strict, flexible)
    assert ext.parsed == (flexible != INVALID)


def test_last_answer_line_wins():
    assert extract_answer("Answer: 1\nwait\nAnswer: 2", "number").strict == "2"


def test_is_correct_normalises_gold_and_rejects_invalid():
    assert is_correct("1630", "$1,630.00", "number")
    assert is_correct("yes", "True", "yes-no")
    assert not is_correct(INVALID, INVALID, "text")
    assert not is_correct("5", "6", "number")


def test_split_answer_line():
    assert split_answer_line("a = 1.\nb = 2.\nAnswer: 3\nignored") == ("a = 1.\nb = 2.", "3")
    assert split_answer_line("no answer here") == ("no answer here", None)


def test_normalize_rejects_unknown_type():
    with pytest.raises(ValueError, match="answer_type"):
        normalize("1", "integer")


def test_never_evaluates_expressions():
    # an expression is text to match, never code to run
    assert extract_answer("Answer: __import__('os').getcwd()", "number").strict == INVALID
    assert extract_answer("Answer: 2+3", "number").strict == "2"
