"""What every stage entrypoint does first: logging, seeding, and a provenance record."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import platform
import random
import subprocess
import sys

PACKAGES = ("pst-distill", "torch", "transformers", "sentence-transformers", "peft", "dvc", "vllm")


def setup(stage: str, common, section) -> logging.Logger:
    """Configure logging, log the resolved config, seed everything."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    log = logging.getLogger(f"stage.{stage}")
    log.info("common: %s", json.dumps(common.model_dump(), sort_keys=True))
    log.info("%s: %s", stage, json.dumps(section.model_dump(), sort_keys=True))
    seed_everything(common.seed)
    return log


def seed_everything(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def git_hash() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(device: str | None = None) -> dict:
    """Git hash, package versions and device: attached to every metrics file."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"git": git_hash(), "python": platform.python_version(), "packages": versions,
            "device": device or "cpu", "platform": platform.platform()}


def cli(main) -> None:
    """Run a stage's main; a bad params file exits 2 with its message, no traceback."""
    from pst_distill.config import ConfigError

    try:
        main()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
