"""The offline GPU kit (README.md here), run from the repository root.

    python -m tools.gpu bundle [--out DIR] [--with-embedder] [--batch-mib N]
    python -m tools.gpu check OUT_DIR [--dry-run] [--bundle DIR] [--budget S]
    python -m tools.gpu experiment OUT_DIR [--dry-run] [--tar-only] [--profile FILE]
        [--bundle DIR] [--keep-work] [--budget S]
    python -m tools.gpu dry-params PROFILE OUT
    python -m tools.gpu size [--profile FILE] [--costs FILE] [--budget S] [--sample N]
    python -m tools.gpu smoke OUT_DIR [--dry-run] [--bundle DIR] [--profile FILE] [--budget S]

and the steps the check and the experiment run as subprocesses:

    python -m tools.gpu install BUNDLE SITE [--cross] [--need PKG] [--imports MOD,MOD]
    python -m tools.gpu workcopy ROOT REPO --profile FILE [--dry-run]
    python -m tools.gpu smoke-measure PARAMS OUT [--steps N]

``python tools/gpu/__main__.py ...`` does the same from anywhere.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

if not __package__:  # run as a file: import the package from the repository root
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(here.parents[1]))

# command -> module (or module:function; default main)
COMMANDS = {"bundle": "bundle", "check": "check", "experiment": "experiment", "smoke": "smoke",
            "dry-params": "dryrun", "size": "sizing", "install": "install",
            "workcopy": "workcopy", "smoke-measure": "smoke:measure_main"}


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    module, _, function = COMMANDS[argv[0]].partition(":")
    return getattr(importlib.import_module(f"tools.gpu.{module}"), function or "main")(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
