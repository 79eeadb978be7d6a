"""What every stage entrypoint does: logging, seeding, timings, a provenance record, and one
error path for bad input."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import random
import subprocess
import sys
import time

PACKAGES = ("pst-distill", "torch", "transformers", "sentence-transformers", "peft", "dvc")


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
    """Python's, numpy's and torch's global generators; torch only where the stage loaded it
    (importing it costs seconds, and a stage without torch draws nothing from it)."""
    random.seed(seed)
    import numpy as np

    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def process_age() -> float:
    """Seconds since this process started (interpreter start-up and imports so far).

    On Linux from /proc: the process's start in clock ticks since boot against the uptime,
    both fine-grained. (psutil's ``create_time`` adds the boot time, which /proc/stat gives
    in whole seconds, so its age is off by up to a second: 0.8 s on the machine this was
    measured on.)"""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return max(time.time() - psutil.Process().create_time(), 0.0)
    except (ImportError, OSError):
        return 0.0


class Timer:
    """Where a stage's time goes, for its details file: ``startup`` (from the interpreter's
    start to this timer: Python and the imports so far), one entry per :meth:`phase`, and
    ``total`` (the process's age when :meth:`as_dict` is called)."""

    def __init__(self):
        self.startup = process_age()
        self.phases: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - start

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + seconds

    def as_dict(self) -> dict[str, float]:
        return {"startup": round(self.startup, 3),
                **{k: round(v, 3) for k, v in self.phases.items()},
                "total": round(process_age(), 3)}


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


# Errors that mean "fix your input", not "the code is broken": printed as one line, exit 2.
# Named by module so that none is imported just to be caught (it was imported if raised).
USER_ERRORS = (
    ("pst_distill.config.base", "ConfigError"),         # params.yaml, model ids, devices
    ("pst_distill.models", "ModelIdError"),
    ("pst_distill.embed.targets", "EmbeddingMismatchError"),  # stale or misaligned embeddings
    ("builtins", "FileNotFoundError"),                  # an input path that does not exist
    ("pst_distill.teacher.vllm_backend", "PromptTooLong"),  # teacher.vllm.max_model_len
)
# The run could not go on for a reason outside the code (a teacher server down past its
# outage budget, …): one line too, exit 1.
STOPPED = (("pst_distill.teacher.base", "TeacherUnavailable"),)


def _classes(names) -> tuple[type, ...]:
    found = (getattr(sys.modules.get(mod), name, None) for mod, name in names)
    return tuple(c for c in found if isinstance(c, type))


def cli(main, exit_fast: bool = False) -> None:
    """Run a stage's ``main``: bad input (a bad params value, a missing file, …) prints
    ``error: <message>`` and exits 2, a teacher that stopped exits 1; no traceback for
    either. Anything else is a bug and keeps its traceback.

    ``exit_fast`` (a stage's own process, never a test's): once ``main`` returned, every
    output written (atomically, fsynced) and the logs flushed, the process ends without
    the interpreter's teardown, which takes about a second once torch and a model are
    loaded; a stage under torch.distributed keeps the normal exit."""
    try:
        main()
    except Exception as exc:
        for classes, code in ((_classes(USER_ERRORS), 2), (_classes(STOPPED), 1)):
            if isinstance(exc, classes):
                print(f"error: {exc}", file=sys.stderr)
                raise SystemExit(code) from None
        raise
    if exit_fast and "WORLD_SIZE" not in os.environ:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
