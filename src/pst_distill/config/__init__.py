"""Typed, validated params: ``common`` plus one section per stage, one schema module each.

A stage reads ``common`` and its own section(s) and nothing else::

    from pst_distill.config import load
    from pst_distill.config.train import TrainConfig

    common, train = load("params.yaml", train=TrainConfig)

:func:`load` validates those sections (pydantic: every rule of a section lives in its
schema), applies the one rule that spans sections (the methods ``train`` trains must be
built by ``assemble``), then asks each section what this machine lacks for it (model ids,
CUDA, files: :mod:`pst_distill.config.machine`), all before the stage reads any input. Any
problem is one :class:`ConfigError` naming the keys and what is allowed. The root imports no
section schema, so a stage's DVC deps are its own section's module, ``common`` and this root:
editing the train schema does not re-run the teacher.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pst_distill.config.base import ConfigError, Section
from pst_distill.config.common import CommonConfig
from pst_distill.methods import METHODS

__all__ = ["ConfigError", "Section", "load", "parse_section", "read_params"]
# the top-level keys of a params file (`paths` is dvc.yaml's, kept there by some users)
SECTIONS = ("common", "prepare", "teacher", "embed", "assemble", "train", "evaluate",
            "adaptive", "report", "paths")


def read_params(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(unknown)}; allowed: "
                          f"{', '.join(s for s in SECTIONS if s != 'paths')}")
    return raw


def parse_section(name: str, schema: type[Section], raw: Any) -> Section:
    """One section validated by its schema, or a ConfigError naming every bad key."""
    try:
        return schema.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        raise ConfigError(_format_error(name, schema, exc)) from None


def load(path: str | Path, **schemas: type[Section]) -> tuple:
    """``(common, *sections)`` for a stage: ``load(path, train=TrainConfig)``.

    Validates ``common`` and the named sections, the cross-section rule, then the
    sections' machine checks; all problems are reported together."""
    raw = read_params(path)
    errors, parsed = [], []
    for name, schema in {"common": CommonConfig, **schemas}.items():
        if name != "common" and raw.get(name) is None:
            errors.append(f"{path}: section '{name}' is missing")
            continue
        try:
            parsed.append(parse_section(name, schema, raw.get(name)))
        except ConfigError as exc:
            errors.append(str(exc))
    if errors:
        raise ConfigError("\n".join(errors))
    sections = dict(zip({"common": None, **schemas}, parsed))
    problems = _methods_are_built(sections.get("train"), raw.get("assemble"))
    for cfg in parsed:
        problems += cfg.machine_errors()
    if problems:
        raise ConfigError("\n".join(["invalid params:", *(f"  {e}" for e in problems)]))
    return tuple(parsed)


def _methods_are_built(train, assemble_raw) -> list[str]:
    """The one rule across sections: every method ``train`` trains has its data built by
    ``assemble`` (its ``methods``, all of them by default)."""
    if train is None:
        return []
    built = (assemble_raw if isinstance(assemble_raw, dict) else {}).get("methods", list(METHODS))
    if not isinstance(built, list):
        return []  # malformed: the assemble stage reports it
    return [f"train.methods.{m}: assemble.methods does not build this method's data "
            f"(assemble.methods: {', '.join(map(str, built))})"
            for m in train.methods if m not in built]


def _format_error(section: str, schema: type[BaseModel], exc: ValidationError) -> str:
    lines = [f"invalid params in section '{section}':"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in (section, *err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if err["type"] == "missing" or isinstance(got, dict) else f" (got {got!r})"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(schema, err["loc"][:-1])
            msg, shown = f"unknown key; allowed keys: {', '.join(allowed)}", ""
        if msg.startswith(f"{section}."):  # a rule that names its own key(s), a line each
            lines += [f"  {line}" for line in msg.splitlines()]
            continue
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc:
        if isinstance(part, int) or part not in model.model_fields:
            continue  # list index or dict key (e.g. train.methods.<method>)
        ann = model.model_fields[part].annotation
        inner = getattr(ann, "__args__", (ann,))
        model = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), model)
    return sorted(model.model_fields)
