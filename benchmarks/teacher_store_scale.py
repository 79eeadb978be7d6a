"""The teacher store at a team's scale: N generations kept as segments (the store's layout)
against one JSON file per generation (the layout before it), side by side in temporary git +
DVC repos with a local folder remote.

    python benchmarks/teacher_store_scale.py [--n 100000] [--segment-size 256] [--skip-files]

For each layout: writing the generations, ``dvc add`` of the folder, ``dvc push`` to the
remote, ``dvc pull`` into a fresh clone (cache and folder removed first), and the teacher
stage's start-up with all of them cached (knowing which keys it has: the segments' indexes,
or a listing of the files), then reading each entry back with its checksum, as a rerun does
to write its outputs. Prints one JSON object with the seconds, the files and the bytes of each, and
the per-file/segments ratios. Synthetic generations of realistic size: a ~400-character
prompt, a ~600-character completion, and the metadata a backend records.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from pst_distill.io import write_text
from pst_distill.teacher.base import Completion
from pst_distill.teacher.cache import GenerationCache, entry_line, parse_entry

WORDS = "the of and to in a is that for it as was with be by on not he this are or his".split()
META = {"backend": "vllm", "model": "some-org/teacher-7b", "revision": None, "vllm": "0.32.0",
        "device": "NVIDIA H100", "dtype": "bfloat16", "dp_rank": 0, "tensor_parallel_size": 1}


def completions(n: int, seed: int = 0):
    rng = random.Random(seed)
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(110)) + f"\nAnswer: {i}"
        prompt = " ".join(rng.choice(WORDS) for _ in range(75))
        yield Completion(key=f"{i:032x}", text=text, finish_reason="stop", prompt_tokens=95,
                         completion_tokens=140, prompt=prompt)


def write_segments(folder: Path, n: int, segment_size: int) -> None:
    cache = GenerationCache(folder, segment_size=segment_size, flush_s=1e9)
    for comp in completions(n):
        cache.put(comp, META)
    cache.close()


def write_files(folder: Path, n: int) -> None:
    """The layout before segments: ``<key[:2]>/<key>.json``, one checksummed entry each."""
    for comp in completions(n):
        write_text(folder / comp.key[:2] / f"{comp.key}.json", entry_line(comp, META))


def index_segments(folder: Path) -> int:
    return len(GenerationCache(None, read=[folder]).keys())


def read_all_segments(folder: Path, n: int) -> int:
    cache = GenerationCache(None, read=[folder])
    found = sum(cache.get(f"{i:032x}") is not None for i in range(n))
    cache.close()
    return found


def index_files(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("*.json"))


def read_all_files(folder: Path, n: int) -> int:
    found = 0
    for i in range(n):
        key = f"{i:032x}"
        try:
            raw = (folder / key[:2] / f"{key}.json").read_bytes()
        except FileNotFoundError:
            continue
        found += parse_entry(raw, key) is not None  # the same checksummed entry
    return found


def sh(cwd: Path, *cmd: str) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return round(time.perf_counter() - start, 2), out


def measure(root: Path, name: str, write, index, read, n: int) -> dict:
    repo, remote = root / name, root / f"{name}-remote"
    repo.mkdir()
    sh(repo, "git", "init", "-q")
    sh(repo, "dvc", "init", "-q")
    sh(repo, "dvc", "remote", "add", "-d", "r", str(remote))
    out = {"write_s": timed(write, repo / "store")[0]}
    files = [p for p in (repo / "store").rglob("*") if p.is_file()]
    out.update(files=len(files), mib=round(sum(p.stat().st_size for p in files) / 2**20, 1))
    out["dvc_add_s"] = timed(sh, repo, "dvc", "add", "store")[0]
    out["dvc_push_s"] = timed(sh, repo, "dvc", "push")[0]
    shutil.rmtree(repo / "store")
    shutil.rmtree(repo / ".dvc" / "cache")
    out["dvc_pull_s"] = timed(sh, repo, "dvc", "pull")[0]
    out["startup_index_s"], found = timed(index, repo / "store")
    assert found == n, (name, found)
    out["read_all_s"], found = timed(read, repo / "store", n)
    assert found == n, (name, found)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="generations")
    ap.add_argument("--segment-size", type=int, default=256)
    ap.add_argument("--skip-files", action="store_true", help="only the segment layout")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pst-store-scale-") as tmp:
        root = Path(tmp)
        result = {"generations": args.n, "segment_size": args.segment_size,
                  "segments": measure(root, "segments",
                                      lambda f: write_segments(f, args.n, args.segment_size),
                                      index_segments, read_all_segments, args.n)}
        if not args.skip_files:
            result["files"] = measure(root, "files", lambda f: write_files(f, args.n),
                                      index_files, read_all_files, args.n)
            result["files_over_segments"] = {
                k: round(result["files"][k] / max(result["segments"][k], 0.01), 1)
                for k in ("dvc_add_s", "dvc_push_s", "dvc_pull_s", "startup_index_s", "read_all_s")}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
