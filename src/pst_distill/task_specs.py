"""Task names, their sources and the options of each offline generator: a leaf module
(pydantic only), so config validation, which every stage runs, does not make the task
generators and loaders a DVC dep of every stage."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

OFFLINE = "offline"
HUB = "hub"

# Fine-tune-CoT's 12 tasks load from the hub; four tasks have seeded offline generators.
TASK_NAMES: dict[str, tuple[str, ...]] = {
    "single_eq": (HUB,),
    "addsub": (HUB,),
    "multiarith": (HUB,),
    "gsm8k": (HUB,),
    "aqua": (HUB,),
    "svamp": (HUB,),
    "date_understanding": (HUB,),
    "tracking_shuffled_objects": (HUB,),
    "coin_flip": (OFFLINE, HUB),
    "last_letter_concatenation": (OFFLINE, HUB),
    "commonsense_qa": (HUB,),
    "strategy_qa": (HUB,),
    "multistep_arithmetic": (OFFLINE,),
    "gsm_symbolic": (OFFLINE,),
}


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LastLetterOptions(Options):
    k: int = Field(2, ge=1, le=8, description="words to concatenate")


class CoinFlipOptions(Options):
    k: int = Field(4, ge=1, le=10, description="people who may flip the coin")


class ArithmeticOptions(Options):
    steps: int = Field(2, ge=1, le=6, description="operations after the start value")
    max_value: int = Field(50, ge=5, le=10_000)


class GsmSymbolicOptions(Options):
    pass


# generator options per offline task (tasks.generators.GENERATORS pairs them with the functions)
OPTIONS: dict[str, type[Options]] = {
    "last_letter_concatenation": LastLetterOptions,
    "coin_flip": CoinFlipOptions,
    "multistep_arithmetic": ArithmeticOptions,
    "gsm_symbolic": GsmSymbolicOptions,
}
