"""The environment block of every summary: date, system, GPU, Python, torch, CUDA, device,
the versions of the packages a run depends on, the dvc command and the git hash.

Read by a fresh interpreter with the run's environment (after the install, so the bundle's
packages count), not by this process: torch is imported there only.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

from tools.gpu.steps import utc_now

PACKAGES = ("transformers", "accelerate", "peft", "sentence-transformers", "pydantic", "gguf", "dvc",
            "flash-attn", "liger-kernel")
PROBE = f"""
import importlib.metadata as md, platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
for name in {PACKAGES!r}:
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "(missing)")
"""


def _out(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> str:
    try:
        got = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{cmd[0]}: {exc}"
    return (got.stdout.strip() or got.stderr.strip()) if got.returncode == 0 else \
        f"{' '.join(cmd[:2])}: exit {got.returncode} {got.stderr.strip()[-300:]}"


def git_line(root: Path) -> str:
    if not (root / ".git").exists() or shutil.which("git") is None:
        return "git: no repository here (a copy of the working tree)"
    head = _out(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    dirty = _out(["git", "-C", str(root), "status", "--porcelain"])
    return f"git {head}" + (" (uncommitted changes in the tree)" if dirty else "")


def environment(py: str, env: dict, root: Path, extra: tuple[str, ...] = ()) -> str:
    """The block, one fact a line; ``extra`` lines (the profile, the budget) last."""
    lines = [utc_now(), " ".join(platform.uname()[i] for i in (0, 2, 4))]
    if shutil.which("nvidia-smi"):
        lines.append(_out(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                           "--format=csv,noheader"]))
    lines.append(_out([py, "-c", PROBE], env=env))
    lines.append("dvc command " + _out(["dvc", "--version"], env=env))
    lines.append(git_line(root))
    return "\n".join([*lines, *extra]) + "\n"
