"""The extraction pipeline: strict, then flexible, then the [invalid] fallback.

The corpus holds the output shapes teachers and small students really write: GSM8K-style
worked solutions, chatty chat-model answers, markdown, LaTeX, repeated answer lines,
Unicode minus signs, grouped thousands, units, yes/no, choices and text answers.
"""

import pytest

from pst_distill.parsing import (INVALID, answer_markers, extract_answer, is_correct, normalize,
                                 split_answer_line)

GSM8K_TEACHER = (
    "Natalia sold 48/2 = 24 clips in May.\n"
    "Natalia sold 48 + 24 = 72 clips altogether in April and May.\n"
    "Answer: 72"
)
CHATTY = (
    "Sure! Let's break this down step by step.\n\n"
    "1. Janet's ducks lay 16 eggs per day.\n"
    "2. She eats 3 and bakes with 4, so 16 - 3 - 4 = 9 eggs are left.\n"
    "3. She sells them at $2 each: 9 * 2 = $18.\n\n"
    "**Answer:** 18\n\n"
    "I hope this helps! Let me know if the answer is not clear."
)
LATEX = (
    "We have $x = \\frac{120}{4} = 30$ and then $30 + 12 = 42$.\n\n"
    "Final Answer: The final answer is $\\boxed{42}$. I hope it is correct."
)

CORPUS = [
    # --- GSM8K-style teacher outputs
    (GSM8K_TEACHER, "number", "72", "72"),
    ("Weng earns 12/60 = $0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $10.\n"
     "#### 10", "number", "10", "10"),
    ("12 + 7 = 19.\nAnswer: 19", "number", "19", "19"),
    ("So it costs $1,630.\nAnswer: $1,630", "number", "1630", "1630"),
    # the marker in the middle of a line
    ("She earns 9 * 2 = 18 dollars. Answer: 18", "number", "18", "18"),
    ("Total = 5 + 7 = 12 apples. Answer: 12 apples. Next: 99", "number", "12", "12"),
    # --- chatty small-model outputs
    (CHATTY, "number", "18", "18"),
    ("The answer is 15. Let me double-check: 20 - 5 = 15, and 3 * 5 = 15. Done in 2 steps.",
     "number", "15", "15"),
    ("So, the final answer is 36 cookies.\n\nIs there anything else I can help with? 1 more?",
     "number", "36", "36"),
    ("Answer:\n\n45", "number", "45", "45"),
    ("### Answer:\n**45** minutes", "number", "45", "45"),
    ("First 3 + 4 = 7, then 7 * 2 = 14", "number", INVALID, "14"),
    ("I think it takes 3 hours, or maybe 4. Total: 4 hours", "number", INVALID, "4"),
    # --- markdown and LaTeX
    ("**Answer:** 15", "number", "15", "15"),
    ("**Answer: 15**", "number", "15", "15"),
    ("Answer: **15**", "number", "15", "15"),
    ("**Answer**: 15", "number", "15", "15"),
    ("__ANSWER:__ 15", "number", "15", "15"),
    ("Thus the result is $\\boxed{15}$.", "number", "15", "15"),
    (LATEX, "number", "42", "42"),
    ("Final Answer:\n\\boxed{\\frac{3}{4}}", "number", "0.75", "0.75"),
    ("Answer: $2\\,350$", "number", "2350", "2350"),
    # a markdown heading is not a GSM8K "####" answer
    ("#### Step 1: Add the apples\n3 + 4 = 7 apples in total", "number", INVALID, "7"),
    ("#### **Step 2**\nSo he has 9 left", "number", INVALID, "9"),
    # --- several answer lines: the last one with a value of the type wins
    ("Answer: 1\nWait, I made a mistake.\nAnswer: 2", "number", "2", "2"),
    ("Answer: 40\nLet me recheck: 8 * 6 = 48.\nAnswer: 48\n\nAnswer: (unsure)",
     "number", "48", "48"),
    # answer then trailing text
    ("Answer: 25\n\nExplanation: 5 * 5 = 25. Question 2: what is 3 + 3?", "number", "25", "25"),
    # --- negative numbers, Unicode minus and en dash as a sign
    ("Answer: -4", "number", "-4", "-4"),
    ("The temperature drops to \u22125 degrees.\nAnswer: \u22125", "number", "-5", "-5"),
    ("Answer: \u20133", "number", "-3", "-3"),
    ("Answer: $-12.50", "number", "-12.5", "-12.5"),
    ("It fell from 10 \u2212 3 = 7 meters", "number", INVALID, "7"),  # minus between terms
    ("pages 10\u201315, so the rest is 10-3", "number", INVALID, "3"),  # ranges, not signs
    # --- thousands: commas, spaces, thin and narrow no-break spaces
    ("Answer: 2 350", "number", "2350", "2350"),
    ("Answer: 1\u2009234\u2009567 people", "number", "1234567", "1234567"),
    ("Answer: 12\u202f000 \u20ac", "number", "12000", "12000"),
    ("The farm earns 3\u00a0400 dollars.", "number", INVALID, "3400"),
    ("Answer: 1,234,567", "number", "1234567", "1234567"),
    ("I have 3 apples 4 pears", "number", INVALID, "4"),  # no merge without 3-digit groups
    ("He runs 2 100-meter races", "number", INVALID, "100"),  # "2 100-meter" is not 2100
    ("The ages are 3,4,5", "number", INVALID, "5"),
    # --- decimals, currency, percent, fractions
    ("Answer: 3.50", "number", "3.5", "3.5"),
    ("Answer: $1,200.50", "number", "1200.5", "1200.5"),
    ("Answer: .5 liters", "number", "0.5", "0.5"),
    ("Answer: 18 dollars", "number", "18", "18"),
    ("Answer: 15%", "number", "15", "15"),
    ("Answer: 3/4", "number", "0.75", "0.75"),
    ("Answer: 1/3 of the cake", "number", "0.333333", "0.333333"),
    ("She ate 3/4.", "number", INVALID, "0.75"),
    ("Answer: 2.0", "number", "2", "2"),
    # --- yes/no
    ("Answer: Yes", "yes-no", "yes", "yes"),
    ("Answer: False", "yes-no", "no", "no"),
    ("**Answer:** No, the coin is not heads up.", "yes-no", "no", "no"),
    ("The answer is yes.", "yes-no", "yes", "yes"),
    ("Answer: TRUE", "yes-no", "yes", "yes"),
    ("The coin is tails up, so no.", "yes-no", INVALID, "no"),
    ("Answer: Not sure. I would say yes", "yes-no", INVALID, "yes"),  # "not" is not "no"
    # --- choices
    ("Answer: (C)", "choice", "C", "C"),
    ("Answer: B) 15 apples", "choice", "B", "B"),
    ("Answer: d", "choice", "D", "D"),
    ("Answer: I think it is option E", "choice", "E", "E"),
    ("The correct answer is (A) 12/25/2021.", "choice", "A", "A"),
    ("**Answer:** **B**", "choice", "B", "B"),
    ("It must be (B) because ...", "choice", INVALID, "B"),
    ("A bus leaves at noon, so I pick C", "choice", INVALID, "C"),  # not the article, nor "I"
    ("Answer: F", "choice", "F", "F"),
    # --- text answers (last-letter concatenation)
    ('Answer: "NK".', "text", "nk", "nk"),
    ("The last letters are a and b.\nAnswer: ab", "text", "ab", "ab"),
    ("**Answer:** `ab`", "text", "ab", "ab"),
    ('The answer is "ey". Hope this helps', "text", "ey", "ey"),
    ("Answer: \\boxed{ky}", "text", "ky", "ky"),
    ("Concatenating: y + n\nyn", "text", INVALID, "yn"),
    # --- nothing to take
    ("I am not sure.", "number", INVALID, INVALID),
    ("", "yes-no", INVALID, INVALID),
    ("maybe", "choice", INVALID, INVALID),
    ("Answer: I cannot compute this.", "number", INVALID, INVALID),
]


@pytest.mark.parametrize("text,atype,strict,flexible", CORPUS)
def test_extraction(text, atype, strict, flexible):
    ext = extract_answer(text, atype)
    assert (ext.strict, ext.flexible) == (strict, flexible)
    assert ext.parsed == (flexible != INVALID)


# Strict is the configured prefix, \boxed, "####" and "the answer is": a bare "Answer:"
# line is not strict when the prefix is something else (the flexible pass still reads it).
PREFIXED = [
    ("Final answer:", "3 + 9 = 12.\nFinal answer: 12", "12", "12"),
    ("Final answer:", "3 + 9 = 12.\n**FINAL ANSWER:** 12", "12", "12"),
    ("Final answer:", "3 + 9 = 12.\nAnswer: 12", INVALID, "12"),
    ("Final answer:", "Answer: 11\nFinal answer: 12\nAnswer: 13", "12", "12"),
    ("Final answer:", "3 + 9 = 12, so the answer is 12.", "12", "12"),
    ("####", "3 + 9 = 12\n#### 12", "12", "12"),
    ("####", "3 + 9 = 12\nAnswer: 12", INVALID, "12"),
    ("=>", "3 + 9 = 12 => 12", "12", "12"),
    ("[[ans]]", "x = 5\n[[ANS]] yes", "yes", "yes"),
    ("Result:", "Result: (B)\nAnswer: C", "B", "B"),
]


@pytest.mark.parametrize("prefix,text,strict,flexible", PREFIXED)
def test_configured_prefix_is_the_strict_marker(prefix, text, strict, flexible):
    atype = "yes-no" if "yes" in text else "choice" if "(B)" in text else "number"
    ext = extract_answer(text, atype, answer_prefix=prefix)
    assert (ext.strict, ext.flexible) == (strict, flexible)


def test_prefix_is_matched_literally_not_as_a_regex():
    # "." and "+" in a prefix are characters, not pattern syntax
    assert extract_answer("A.+ 7", "number", answer_prefix="A.+").strict == "7"
    assert extract_answer("AB 7", "number", answer_prefix="A.+").strict == INVALID
    with pytest.raises(ValueError, match="answer_prefix"):
        answer_markers("  ")


def test_is_correct_normalises_gold_and_rejects_invalid():
    assert is_correct("1630", "$1,630.00", "number")
    assert is_correct("-5", "\u22125", "number")
    assert is_correct("2350", "2 350", "number")
    assert is_correct("yes", "True", "yes-no")
    assert is_correct("B", "(b)", "choice")
    assert not is_correct(INVALID, INVALID, "text")
    assert not is_correct("5", "6", "number")


@pytest.mark.parametrize("text,prefix,expected", [
    ("a = 1.\nb = 2.\nAnswer: 3\nignored", "Answer:", ("a = 1.\nb = 2.", "3")),
    ("no answer here", "Answer:", ("no answer here", None)),
    ("9 * 2 = 18 dollars. Answer: 18", "Answer:", ("9 * 2 = 18 dollars.", "18")),
    ("9 * 2 = 18.\n**Answer:** 18", "Answer:", ("9 * 2 = 18.", "18")),
    ("9 * 2 = 18.\nFinal Answer: 18", "Answer:", ("9 * 2 = 18.", "18")),
    ("Answer: 1\nfix: 2\nAnswer: 2", "Answer:", ("Answer: 1\nfix: 2", "2")),
    ("9 * 2 = 18.\nFinal answer: 18", "Final answer:", ("9 * 2 = 18.", "18")),
    ("9 * 2 = 18.\nAnswer: 18", "Final answer:", ("9 * 2 = 18.\nAnswer: 18", None)),
])
def test_split_answer_line(text, prefix, expected):
    assert split_answer_line(text, prefix) == expected


def test_normalize_rejects_unknown_type():
    with pytest.raises(ValueError, match="answer_type"):
        normalize("1", "integer")
    with pytest.raises(ValueError, match="answer_type"):
        extract_answer("", "integer")


def test_a_digit_run_is_no_answer_and_no_crash():
    # int() refuses strings of more than 4300 digits; an answer is never that long
    assert extract_answer("Answer: " + "9" * 5000, "number").flexible == INVALID
    assert extract_answer("Answer: 1/" + "9" * 5000, "number").flexible == INVALID
    assert extract_answer("Answer: " + "9" * 40, "number").strict == "9" * 40


def test_never_evaluates_expressions():
    # an expression is text to match, never code to run
    assert extract_answer("Answer: __import__('os').getcwd()", "number").strict == INVALID
    assert extract_answer("Answer: 2+3", "number").strict == "2"
    assert extract_answer("Answer: 10**100", "number").strict == "10"
