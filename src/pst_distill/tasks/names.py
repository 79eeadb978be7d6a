"""Task names and the sources each one has. Kept import-free so config.py can use it."""

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
