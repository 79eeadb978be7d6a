"""Bad params stop a stage at start-up with an error naming the key and what is allowed."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pst_distill.config import ConfigError, load_section

ROOT = Path(__file__).resolve().parents[2]
GOOD = {
    "common": {"seed": 1},
    "prepare": {"test_frac": 0.2, "tasks": [{"name": "coin_flip", "n": 10, "options": {"k": 3}}]},
    "teacher": {"backend": "reference"},
}


def write(tmp_path, params):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    return p


def with_change(section, key, value):
    params = yaml.safe_load(yaml.safe_dump(GOOD))
    target = params[section]
    *path, last = key.split(".")
    for part in path:
        target = target[int(part)] if part.isdigit() else target[part]
    target[last] = value
    return params


def test_good_params_load(tmp_path):
    common, prep = load_section(write(tmp_path, GOOD), "prepare")
    assert common.seed == 1 and prep.tasks[0].options == {"k": 3}
    _, teacher = load_section(write(tmp_path, GOOD), "teacher")
    assert teacher.n == 1 and teacher.backend == "reference"


@pytest.mark.parametrize("section,key,value,expected", [
    ("teacher", "temprature", 0.5, r"teacher\.temprature: unknown key; allowed keys: .*temperature"),
    ("teacher", "batch_size", "eight", r"teacher\.batch_size: Input should be a valid integer"),
    ("prepare", "test_frac", 1.5, r"prepare\.test_frac: Input should be less than 1"),
    ("prepare", "tasks.0.name", "coin_toss", r"unknown task 'coin_toss'; allowed: .*coin_flip"),
    ("teacher", "backend", "gpt", r"teacher\.backend: Input should be 'reference', 'transformers'"),
    ("teacher", "n", 0, r"teacher\.n: Input should be greater than or equal to 1"),
    ("teacher", "temperature", -0.1, r"teacher\.temperature: Input should be greater than or equal to 0"),
    ("prepare", "tasks", [], r"prepare\.tasks: List should have at least 1 item"),
    ("prepare", "tasks.0.options", {"k": 0}, r"greater than or equal to 1"),
    ("prepare", "tasks.0.options", {"people": 3}, r"people"),
    ("prepare", "tasks.0.source", "hub2", r"prepare\.tasks\.0\.source: Input should be 'offline' or 'hub'"),
    ("teacher", "n", 4, r"n > 1 samples need temperature > 0"),
    ("common", "seed", -1, r"common\.seed: Input should be greater than or equal to 0"),
    ("teacher", "top_p", 0.0, r"teacher\.top_p: Input should be greater than 0"),
])
def test_bad_params_are_rejected(tmp_path, section, key, value, expected):
    path = write(tmp_path, with_change(section, key, value))
    with pytest.raises(ConfigError, match=expected):
        load_section(path, "teacher" if section == "teacher" else "prepare")


def test_unknown_section_and_missing_section(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown section\(s\) techer"):
        load_section(write(tmp_path, {**GOOD, "techer": {}}), "teacher")
    with pytest.raises(ConfigError, match="section 'teacher' is missing"):
        load_section(write(tmp_path, {"common": {}, "prepare": GOOD["prepare"]}), "teacher")


def test_duplicate_task(tmp_path):
    params = with_change("prepare", "tasks", [{"name": "coin_flip"}, {"name": "coin_flip"}])
    with pytest.raises(ConfigError, match="task listed twice: coin_flip"):
        load_section(write(tmp_path, params), "prepare")


def test_task_without_that_source(tmp_path):
    params = with_change("prepare", "tasks", [{"name": "gsm8k", "source": "offline"}])
    with pytest.raises(ConfigError, match="task 'gsm8k' has no 'offline' source; available: hub"):
        load_section(write(tmp_path, params), "prepare")


def test_stage_fails_at_startup_naming_the_key(tmp_path):
    path = write(tmp_path, with_change("prepare", "test_frac", 2))
    out = subprocess.run(
        [sys.executable, str(ROOT / "stages/prepare_data.py"), "--params", str(path),
         "--train", str(tmp_path / "tr.jsonl"), "--test", str(tmp_path / "te.jsonl"),
         "--stats", str(tmp_path / "s.json")],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "prepare.test_frac" in out.stderr
    assert not (tmp_path / "tr.jsonl").exists()
