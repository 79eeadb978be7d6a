"""scripts/lib/gpu_install.sh on a small hand-made bundle (the layout of
scripts/prepare_gpu_bundle.sh): wheels install offline, a big file is joined from parts
carried in two batches and checked by sha256; a wrong hash or a missing batch stops it.
Plus the pure helpers of scripts/lib (wheel closure, requirement check, summary)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "scripts" / "lib" / "gpu_install.sh"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "lib" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wheel(path: Path, name: str = "demo_pkg", requires: tuple[str, ...] = ()) -> None:
    """A minimal pure-Python wheel."""
    info = f"{name}-0.1.dist-info"
    files = {f"{name}/__init__.py": b"VALUE = 42\n",
             f"{info}/METADATA": ("Metadata-Version: 2.1\nName: {}\nVersion: 0.1\n".format(name)
                                  + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n"}
    record = "".join(f"{k},,\n" for k in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path / f"{name}-0.1-py3-none-any.whl", "w") as zf:
        for k, v in files.items():
            zf.writestr(k, v)
        zf.writestr(f"{info}/RECORD", record)


def make_bundle(root: Path, big: bytes, joined_sha: str) -> Path:
    bundle = root / "bundle"
    for b in ("batch1/wheels", "batch1/files", "batch2/files"):
        (bundle / b).mkdir(parents=True)
    wheel(bundle / "batch1" / "wheels")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = b"# the package without its big file\n"
        ti = tarfile.TarInfo("demo_model/__init__.py")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    (bundle / "batch1/files/demo_model.stub.tar").write_bytes(buf.getvalue())
    half = len(big) // 2
    (bundle / "batch1/files/demo_model.part00").write_bytes(big[:half])
    (bundle / "batch2/files/demo_model.part01").write_bytes(big[half:])
    joins = f"demo_model/weights.bin\t{joined_sha}\tdemo_model.stub.tar\tdemo_model.part00 demo_model.part01 \n"
    files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    manifest = "".join(f"{sha256((bundle / f).read_bytes())}  {f}\n" for f in files)
    for b in ("batch1", "batch2"):
        (bundle / b / "JOINS.tsv").write_text(joins)
        (bundle / b / "MANIFEST.sha256").write_text(manifest)
    return bundle


def install(bundle: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(INSTALL), str(bundle), str(site)], capture_output=True,
                          text=True, timeout=300, env={"PATH": "/usr/bin:/bin",
                                                      "PYTHON": sys.executable})


@pytest.fixture
def big() -> bytes:
    return bytes(range(256)) * 300 + b"tail"


def test_installs_wheels_and_joins_parts_from_two_batches(tmp_path, big):
    bundle, site = make_bundle(tmp_path, big, sha256(big)), tmp_path / "site"
    proc = install(bundle, site)
    assert proc.returncode == 0, proc.stderr
    assert (site / "demo_model" / "weights.bin").read_bytes() == big
    assert (site / "demo_model" / "__init__.py").exists()
    assert (site / "demo_pkg" / "__init__.py").read_text() == "VALUE = 42\n"
    again = install(bundle, site)  # the stamp: a second call installs nothing
    assert again.returncode == 0 and "already installed" in again.stdout


def test_a_joined_file_with_the_wrong_sha256_is_refused(tmp_path, big):
    bundle, site = make_bundle(tmp_path, big, sha256(big + b"x")), tmp_path / "site"
    proc = install(bundle, site)
    assert proc.returncode != 0 and "sha256" in proc.stderr
    assert not (site / "demo_model" / "weights.bin").exists()


def test_a_missing_batch_is_named(tmp_path, big):
    bundle = make_bundle(tmp_path, big, sha256(big))
    shutil.rmtree(bundle / "batch2")
    proc = install(bundle, tmp_path / "site")
    assert proc.returncode != 0 and "batch2/files/demo_model.part01" in proc.stderr


def test_a_corrupted_part_fails_the_manifest(tmp_path, big):
    bundle = make_bundle(tmp_path, big, sha256(big))
    part = bundle / "batch2/files/demo_model.part01"
    part.write_bytes(b"Y" + part.read_bytes()[1:])
    proc = install(bundle, tmp_path / "site")
    assert proc.returncode != 0 and not (tmp_path / "site" / "demo_model").exists()


def test_wheel_closure_stops_at_what_the_image_has():
    closure = load("wheel_closure")
    env = closure.target_env("3.12")
    ship, missing = closure.closure(["pydantic"], {"typing-extensions"}, env)
    assert {"pydantic", "pydantic-core", "annotated-types", "typing-inspection"} <= set(ship)
    assert "typing-extensions" not in ship and not missing
    ship, _ = closure.closure(["pydantic"], {"typing-extensions", "pydantic-core"}, env)
    assert "pydantic-core" not in ship


def test_check_requirements_reports_what_is_unmet(tmp_path):
    check = load("check_requirements")
    site = tmp_path / "site"
    site.mkdir()
    with zipfile.ZipFile(next(iter(_wheel_at(tmp_path, ("pytest>=1", "no-such-dist-xyz>=1"))))) as zf:
        zf.extractall(site)
    problems = check.unmet(str(site), None)
    assert problems == ["demo_pkg needs no-such-dist-xyz>=1: not installed"]
    assert check.unmet(str(site), None, {"demo_pkg"}) == []


def _wheel_at(tmp_path: Path, requires):
    where = tmp_path / "w"
    where.mkdir()
    wheel(where, requires=requires)
    return where.glob("*.whl")


def test_summary_marks_the_targets(tmp_path):
    summary = load("gpu_summary")
    run = {"tokens_per_s": 320_000.0, "mfu": 0.2, "peak_mem_bytes": 2**30}
    rec = {"config": "smollm2-135m-random", "device": "cuda", "device_name": "H100", "batch": 128,
           "hf": {**run, "tokens_per_s": 80_000.0}, "ours": run, "ratio_vs_hf": 4.0}
    assert summary.target_note(rec) == "ratio < 5x, >= 300k tok/s"
    steps, bench, env = tmp_path / "s.tsv", tmp_path / "b.jsonl", tmp_path / "e.txt"
    steps.write_text("install\tok\t3\t\nbenchmark\ttimeout\t150\tstopped\n")
    bench.write_text(json.dumps(rec) + "\nnot json\n")
    sys.argv = ["gpu_summary", str(steps), str(bench), str(env), str(tmp_path / "summary.md")]
    assert summary.main() == 1  # a step that did not pass
    text = (tmp_path / "summary.md").read_text()
    assert "| benchmark | timeout | 150 | stopped |" in text and "| 320,000 | 4.00 |" in text
