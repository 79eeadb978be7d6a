"""Every section's schema by name, for tools that look at a whole params file (``python -m
pst_distill check``, tests). No stage imports this module: a stage loads its own section
only (:func:`pst_distill.config.load`), so its DVC deps stay its own schema and the root."""

from __future__ import annotations

from pathlib import Path

from pst_distill.config import ConfigError, load, parse_section, read_params
from pst_distill.config.adaptive import AdaptiveConfig
from pst_distill.config.assemble import AssembleConfig
from pst_distill.config.base import Section
from pst_distill.config.common import CommonConfig
from pst_distill.config.embed import EmbedConfig
from pst_distill.config.evaluate import EvaluateConfig
from pst_distill.config.prepare import PrepareConfig
from pst_distill.config.report import ReportConfig
from pst_distill.config.teacher import TeacherConfig
from pst_distill.config.train import TrainConfig

SCHEMAS: dict[str, type[Section]] = {
    "common": CommonConfig, "prepare": PrepareConfig, "teacher": TeacherConfig,
    "embed": EmbedConfig, "assemble": AssembleConfig, "train": TrainConfig,
    "evaluate": EvaluateConfig, "adaptive": AdaptiveConfig, "report": ReportConfig,
}


def parse(name: str, raw) -> Section:
    """Section ``name`` of a params dict, validated on its own."""
    if name not in SCHEMAS:
        raise ConfigError(f"unknown section {name!r}; allowed: {', '.join(SCHEMAS)}")
    return parse_section(name, SCHEMAS[name], raw)


def load_section(path: str | Path, name: str) -> tuple:
    """``(common, section)`` as the stage that reads ``name`` gets them."""
    return load(path, **({} if name == "common" else {name: SCHEMAS[name]}))


def check_file(path: str | Path, machine: bool = True) -> dict[str, Section]:
    """Every section present in the file (and ``common``), validated; with ``machine``, what
    this machine lacks for each too. All problems in one :class:`ConfigError`."""
    raw = read_params(path)
    present = {n: s for n, s in SCHEMAS.items() if n != "common" and raw.get(n) is not None}
    if machine:
        out = load(path, **present)
        return dict(zip(["common", *present], out))
    errors, parsed = [], {}
    for name in ["common", *present]:
        try:
            parsed[name] = parse(name, raw.get(name))
        except ConfigError as exc:
            errors.append(str(exc))
    if errors:
        raise ConfigError("\n".join(errors))
    return parsed
