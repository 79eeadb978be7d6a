"""Stage teacher_store: the shared store of teacher generations, a persistent DVC output.

The store holds content-addressed segments of generations (pst_distill.teacher.cache). The
teacher stage reads it and writes new generations to its local cache; `python -m pst_distill
teacher-share` moves those into the store and records it here, and `dvc push` sends it to the
remote. Being an upstream output that does not change when the teacher's code does, the store
is pulled by a teammate's `dvc repro --pull` before the teacher stage runs. This stage only
makes sure the folder exists (`persist: true`: DVC never deletes it before a run).
"""

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, help="the store folder")
    args = ap.parse_args()
    Path(args.store).mkdir(parents=True, exist_ok=True)


if __name__ == "__main__":
    main()
