"""What every params section shares: the pydantic base and the one error type."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """params.yaml is wrong; the message names the key and what is allowed."""


class Section(BaseModel):
    """A params section: unknown keys refused, values frozen after validation.

    ``machine_errors`` says what this machine lacks for the section's stage (a model id
    that resolves nowhere, a CUDA device that is not there, ...), without loading anything;
    the root runs it after validation, before the stage reads any input."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def machine_errors(self) -> list[str]:
        return []
