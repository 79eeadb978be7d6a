"""Teacher rationales shared through DVC remotes, with the real ``dvc`` CLI in temp git repos:
a local folder remote and an S3 remote served by moto on loopback.

One repo runs the pipeline up to generate_rationales and pushes outputs and run-cache; clones
then ``dvc pull`` (byte-identical outputs, clean status) or ``dvc repro --pull`` (the teacher
never runs: no teacher cache is created); a previous params version comes back from run-cache.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from project import copy_project

pytestmark = pytest.mark.dvc  # the reference teacher: no model
REPO = Path(__file__).resolve().parents[2]
OUTS = ["data/prepared/train.jsonl", "data/rationales/train.jsonl",
        "data/rationales/generations.jsonl"]
BUCKET = "pst-teacher"


def sh(cwd: Path, *cmd: str, env: dict) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def set_max_items(repo: Path, n: int | None) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["teacher"]["max_items"] = n
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    return {**os.environ, "HOME": str(home), "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1", "PST_DISTILL_CACHE":
            os.environ.get("PST_DISTILL_CACHE", str(Path.home() / ".cache" / "pst_distill"))}


@pytest.fixture(scope="module")
def published(tmp_path_factory, env, s3_endpoint):
    """Team member A: runs the teacher (two params versions) and pushes to both remotes."""
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing",
                 ).create_bucket(Bucket=BUCKET)
    root = tmp_path_factory.mktemp("remotes")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["prepare"]["tasks"] = [{"name": "coin_flip", "source": "offline", "n": 20,
                                   "options": {"k": 2}}]
    params["teacher"] = {"backend": "reference", "max_items": None}
    a = copy_project(root / "a", params)  # its own DVC cache: the remotes are under test
    env["PYTHONPATH"] = str(a / "src")  # the copy's code, in A and in its clones
    sh(a, "dvc", "remote", "add", "-d", "local", str(root / "remote"), env=env)
    sh(a, "dvc", "remote", "add", "s3", f"s3://{BUCKET}/store", env=env)
    sh(a, "dvc", "remote", "modify", "s3", "endpointurl", s3_endpoint, env=env)
    sh(a, "dvc", "repro", "generate_rationales", env=env)
    sh(a, "git", "add", "-A", env=env)
    sh(a, "git", "commit", "-qm", "teacher rationales", env=env)
    for remote in ("local", "s3"):
        sh(a, "dvc", "push", "--run-cache", "-r", remote, env=env)
    set_max_items(a, 5)  # a second run, not committed: shared through the run-cache only
    sh(a, "dvc", "repro", "generate_rationales", env=env)
    for remote in ("local", "s3"):
        sh(a, "dvc", "push", "--run-cache", "-r", remote, env=env)
    sh(a, "git", "checkout", "-q", "--", "params.yaml", "dvc.lock", env=env)  # temp repo only
    sh(a, "dvc", "checkout", "generate_rationales", env=env)
    return root, a


def clone(root: Path, a: Path, name: str, remote: str, env: dict) -> Path:
    b = root / name
    sh(root, "git", "clone", "-q", str(a), str(b), env=env)
    sh(b, "dvc", "remote", "default", "--local", remote, env=env)
    return b


@pytest.mark.parametrize("remote", ["local", "s3"])
def test_pull_round_trip_is_byte_identical(published, remote, env):
    root, a = published
    b = clone(root, a, f"pull-{remote}", remote, env)
    # with its upstream stages: the prepared data and the (shared) teacher store
    sh(b, "dvc", "pull", "--with-deps", "generate_rationales", env=env)
    for out in OUTS:
        assert (b / out).read_bytes() == (a / out).read_bytes(), out
    assert (b / "data/teacher_store").is_dir()
    assert "up to date" in sh(b, "dvc", "status", "generate_rationales", env=env)


@pytest.mark.parametrize("remote", ["local", "s3"])
def test_repro_pull_skips_the_teacher(published, remote, env):
    root, a = published
    c = clone(root, a, f"repro-{remote}", remote, env)
    out = sh(c, "dvc", "repro", "--pull", "generate_rationales", env=env)
    assert "Running stage 'generate_rationales'" not in out, out
    assert not (c / ".cache" / "teacher").exists()  # the teacher never ran
    for path in OUTS:
        assert (c / path).read_bytes() == (a / path).read_bytes(), path


@pytest.mark.parametrize("remote", ["local", "s3"])
def test_run_cache_from_the_remote_restores_an_uncommitted_run(published, remote, env):
    """The max_items=5 run was never committed, only pushed with --run-cache: a clone that
    asks for it gets it from the remote's run-cache, and the teacher never runs."""
    root, a = published
    d = clone(root, a, f"runcache-{remote}", remote, env)
    set_max_items(d, 5)
    out = sh(d, "dvc", "repro", "--pull", "generate_rationales", env=env)
    assert "Running stage 'generate_rationales'" not in out, out
    assert "Stage 'generate_rationales' is cached" in out, out
    assert not (d / ".cache" / "teacher").exists()
    assert len((d / "data/rationales/generations.jsonl").read_text().splitlines()) == 5


def test_run_cache_restores_a_previous_params_version(published, env):
    """Local run-cache: going back to max_items=5 restores that run instead of re-running it."""
    _, a = published
    set_max_items(a, 5)
    try:
        out = sh(a, "dvc", "repro", "generate_rationales", env=env)
        assert "Running stage 'generate_rationales'" not in out, out
        assert "skipping run" in out
        assert len((a / "data/rationales/generations.jsonl").read_text().splitlines()) == 5
    finally:
        sh(a, "git", "checkout", "-q", "--", "params.yaml", "dvc.lock", env=env)
        sh(a, "dvc", "checkout", "generate_rationales", env=env)
