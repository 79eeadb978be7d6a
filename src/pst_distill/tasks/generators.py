"""Seeded offline task generators, each writing a worked step-by-step rationale.

Every generator is ``fn(n, rng, **options) -> Iterator[dict]`` yielding records made by
:func:`pst_distill.tasks.records.make_record`. Options are validated by a small pydantic
model per generator, so a typo in ``prepare.tasks[].options`` fails at start-up.
"""

from __future__ import annotations

import random
import re
from typing import Callable, Iterator

from pst_distill.config.prepare import (ArithmeticOptions, CoinFlipOptions,
                                        GsmSymbolicOptions, LastLetterOptions, Options)
from pst_distill.tasks.records import make_record

# Wei et al. (2022) draw names from census lists; a fixed list keeps the generator offline.
NAMES = [
    "Elon", "Larry", "Sergey", "Bill", "Steve", "Ada", "Grace", "Alan", "Linus", "Guido",
    "Margaret", "Barbara", "Donald", "Edsger", "Frances", "Dennis", "Ken", "Bjarne", "Tim",
    "Radia", "Katherine", "Dorothy", "Mary", "John", "James", "Maria", "Lucia", "Sofia",
    "Mateo", "Hugo", "Amara", "Kofi", "Yuki", "Hiro", "Priya", "Arjun", "Chen", "Wei",
    "Olga", "Ivan", "Nadia", "Omar", "Leila", "Pablo", "Carmen", "Jonas", "Freya", "Nils",
    "Ingrid", "Tariq", "Zara", "Felix", "Clara", "Bruno", "Elena", "Marco", "Rosa", "Oscar",
]
_TIMES = {2: "doubles", 3: "triples", 4: "quadruples"}
ITEMS = ["apples", "marbles", "stickers", "books", "pencils", "cookies", "stamps", "shells"]




def last_letter_concatenation(n: int, rng: random.Random, k: int = 2) -> Iterator[dict]:
    for _ in range(n):
        words = rng.sample(NAMES, k)
        phrase = " ".join(words)
        answer = "".join(w[-1] for w in words)
        steps = [f'The last letter of "{w}" is "{w[-1]}".' for w in words]
        steps.append(f'Concatenating them gives "{answer}".')
        yield make_record(
            task="last_letter_concatenation",
            question=f'Take the last letters of each word in "{phrase}" and concatenate them.',
            answer=answer,
            answer_type="text",
            reference_rationale=" ".join(steps),
        )


def coin_flip(n: int, rng: random.Random, k: int = 4) -> Iterator[dict]:
    for _ in range(n):
        people = rng.sample(NAMES, k)
        flips = [rng.random() < 0.5 for _ in people]
        sentences, steps, heads = ["A coin is heads up."], ["The coin starts heads up."], True
        for person, flip in zip(people, flips):
            if flip:
                heads = not heads
                sentences.append(f"{person} flips the coin.")
                steps.append(f"{person} flips it, so it is now {'heads' if heads else 'tails'} up.")
            else:
                sentences.append(f"{person} does not flip the coin.")
                steps.append(f"{person} does not flip it, so it stays {'heads' if heads else 'tails'} up.")
        n_flips = sum(flips)
        steps.append(
            f"The coin was flipped {n_flips} time{'s' if n_flips != 1 else ''}, an "
            f"{'even' if n_flips % 2 == 0 else 'odd'} number, so it is {'heads' if heads else 'tails'} up."
        )
        yield make_record(
            task="coin_flip",
            question=" ".join(sentences) + " Is the coin still heads up?",
            answer="yes" if heads else "no",
            answer_type="yes-no",
            reference_rationale=" ".join(steps),
        )


def multistep_arithmetic(
    n: int, rng: random.Random, steps: int = 2, max_value: int = 50
) -> Iterator[dict]:
    for _ in range(n):
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        value = rng.randint(2, max_value)
        story = [f"{name} has {value} {item}."]
        work = [f"{name} starts with {value} {item}."]
        for _step in range(steps):
            op = rng.choice(["add", "sub", "mul"] if value <= max_value else ["add", "sub"])
            if op == "sub" and value < 2:
                op = "add"
            if op == "add":
                x = rng.randint(1, max_value)
                story.append(f"{name} gets {x} more.")
                work.append(f"After getting {x} more: {value} + {x} = {value + x}.")
                value += x
            elif op == "sub":
                x = rng.randint(1, value - 1)
                story.append(f"{name} gives away {x}.")
                work.append(f"After giving away {x}: {value} - {x} = {value - x}.")
                value -= x
            else:
                x = rng.randint(2, 4)
                story.append(f"{name} then {_TIMES[x]} the number of {item}.")
                work.append(f"After that there are {x} times as many: {value} * {x} = {value * x}.")
                value *= x
        work.append(f"So {name} has {value} {item}.")
        yield make_record(
            task="multistep_arithmetic",
            question=" ".join(story) + f" How many {item} does {name} have now?",
            answer=str(value),
            answer_type="number",
            reference_rationale=" ".join(work),
        )


def gsm_symbolic(n: int, rng: random.Random) -> Iterator[dict]:
    import reasoning_gym  # heavy import, only when the task is used

    data = reasoning_gym.create_dataset("gsm_symbolic", size=n, seed=rng.randrange(2**31))
    for entry in data:
        cot = entry["metadata"]["answer_cot"]
        cot = re.sub(r"\n?####\s*\S+\s*$", "", cot).strip()
        yield make_record(
            task="gsm_symbolic",
            question=entry["question"],
            answer=str(entry["answer"]),
            answer_type="number",
            reference_rationale=cot,
        )


GENERATORS: dict[str, tuple[Callable[..., Iterator[dict]], type[Options]]] = {
    "last_letter_concatenation": (last_letter_concatenation, LastLetterOptions),
    "coin_flip": (coin_flip, CoinFlipOptions),
    "multistep_arithmetic": (multistep_arithmetic, ArithmeticOptions),
    "gsm_symbolic": (gsm_symbolic, GsmSymbolicOptions),
}
