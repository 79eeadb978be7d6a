"""Every bad value in params.yaml stops its stage at start-up: exit 2, the key named in one
message, no traceback, nothing written, within seconds (under 5 s).

Each case runs the real stage script with the exact command line of dvc.yaml, but every
path pointing into a folder that does not exist: the error must come from the params,
before any input is read or any model loads. The shipped params.yaml is the base; each
case changes one thing. A few cases run as DVC runs a stage, in its own process (exit
status, stderr, time); every case runs in this interpreter for its message (the stage's
script as ``__main__``), which costs no interpreter start-up.
"""

from __future__ import annotations

import os
import re
import runpy
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hub import LoopbackHub, go_online

from pst_distill.config.sections import load_section

ROOT = Path(__file__).resolve().parents[2]
BASE = yaml.safe_load((ROOT / "params.yaml").read_text())
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
LIMIT_S = 5.0  # a refusal takes 1-2 s here (start-up), 2.5 s more if the hub hangs
SECTION_OF = {"prepare_data": "prepare", "generate_rationales": "teacher",
              "embed_rationales": "embed", "assemble_dataset": "assemble",
              "train_student": "train", "evaluate_student": "evaluate", "report": "report"}
TRANSFORMERS_TEACHER = {"teacher.backend": "transformers"}
MATRIX = {"method": "pst", "seed": "0"}  # values for a matrix stage's ${item.<name>}
CUDA = {"cpu_only": True}  # marks the cases that need a machine without CUDA


def _cuda_available() -> bool:
    from pst_distill.config.machine import no_cuda as _no_cuda  # cheap: CPU torch not imported

    return not _no_cuda()


# (stage, {dotted key: new value}, text that must appear in stderr). A key ending in
# ``-`` deletes it. ``hub`` cases run online against a loopback hub (tests/support/hub.py).
CASES = [
    # prepare_data
    ("prepare_data", {"prepare.test_frac": 1.5}, "prepare.test_frac"),
    ("prepare_data", {"prepare.tasks.0.name": "coin_toss"}, "prepare.tasks.0.name"),
    ("prepare_data", {"prepare.tasks.0.options": {"k": 0}}, "prepare.tasks.0.options.k"),
    ("prepare_data", {"prepare.tasks.1.options": {"people": 3}},
     "prepare.tasks.1.options.people: unknown option; allowed option keys of coin_flip: k"),
    ("prepare_data", {"prepare.tasks.1": {"name": "multistep_arithmetic", "n": 10,
                                          "options": {"steps": 2, "max_vaule": 9}}},
     "allowed option keys of multistep_arithmetic: steps, max_value"),
    ("prepare_data", {"prepare.tasks.0.n": None}, "prepare.tasks.0.n"),
    ("prepare_data", {"prepare.tasks.1": {"name": "multistep_arithmetic", "n": 10,
                                          "source": "hub"}}, "prepare.tasks.1"),
    ("prepare_data", {"prepare.tasks": []}, "prepare.tasks"),
    ("prepare_data", {"prepare.tasks": [{"name": "gsm8k", "source": "hub", "n": None,
                                         "data_files": "data/raw/gsm8k_missing.jsonl"}]},
     "prepare.tasks.0.data_files"),
    ("prepare_data", {"prepare.tasks": [{"name": "gsm8k", "source": "hub", "options": {"k": 2}}]},
     "prepare.tasks.0.options: options apply to offline generators only"),
    ("prepare_data", {"common.seed": -1}, "common.seed"),
    ("prepare_data", {"common.format.answer_prefix": "Reasoning:"}, "answer_prefix"),
    ("prepare_data", {"common.format.sem_token": "Answer:"}, "sem_token"),
    ("prepare_data", {"common.format.rationale_prefix": "Answer: because"}, "rationale_prefix"),
    ("prepare_data", {"techer": {"n": 1}}, "unknown section(s) techer"),
    ("prepare_data", {"common.format.mode_control.kind": "prefix"}, "common.format.mode_control.kind"),
    ("assemble_dataset", {"assemble.holdout_per_task": 1}, "assemble.holdout_per_task"),
    ("report", {"adaptive.confidence.sweep": [0.5, 1.5]}, "adaptive.confidence.sweep"),
    ("report", {"adaptive.perception.threshold": 1.0}, "adaptive.perception.threshold"),
    ("train_student", {"assemble.methods": ["pst"]}, "train.methods.answer_only"),
    # generate_rationales
    ("generate_rationales", {"teacher.backend": "gpt"}, "teacher.backend"),
    ("generate_rationales", {"teacher.temperature": -1}, "teacher.temperature"),
    ("generate_rationales", {"teacher.n": 4}, "teacher.n"),
    ("generate_rationales", {"teacher.top_p": 0}, "teacher.top_p"),
    ("generate_rationales", {"teacher.openai": {"base_url": "ftp://host/v1"}},
     "teacher.openai.base_url"),
    ("generate_rationales", {**TRANSFORMERS_TEACHER, "teacher.model": "no-org/no-such-teacher"},
     "teacher.model"),
    ("generate_rationales", {**TRANSFORMERS_TEACHER, "teacher.model": "./models/missing-teacher"},
     "teacher.model: './models/missing-teacher' looks like a path but no such model folder"),
    ("generate_rationales", {"teacher.backend": "vllm", "teacher.model": "~/no/such/teacher"},
     "teacher.model"),
    ("generate_rationales", {**TRANSFORMERS_TEACHER, "teacher.device": "cuda", **CUDA},
     "teacher.device"),
    # embed_rationales
    ("embed_rationales", {"embed.model": "./no/such/embedder"}, "embed.model"),
    ("embed_rationales", {"embed.model": "smollm2-135m-instruct"}, "embed.model"),
    ("embed_rationales", {"embed.model": "bad model id!"}, "embed.model"),
    ("embed_rationales", {"embed.device": "cuda", **CUDA}, "embed.device"),
    ("embed_rationales", {"embed.batch_size": 0}, "embed.batch_size"),
    ("embed_rationales", {"embed.model": "no-org/hub-does-not-answer", "hub": "hang"},
     "embed.model: could not check hub id"),
    ("embed_rationales", {"embed.model": "no-org/not-on-the-hub", "hub": "answers"},
     "embed.model: hub id 'no-org/not-on-the-hub' not found on the hub"),
    ("embed_rationales", {"embed.model": "org/real", "embed.revision": "v9", "hub": "answers"},
     "embed.revision: revision 'v9' of 'org/real' not found on the hub"),
    # assemble_dataset
    ("assemble_dataset", {"assemble.methods": ["pst", "cot"]}, "assemble.methods"),
    ("assemble_dataset", {"assemble.corrupt_frac": 2}, "assemble.corrupt_frac"),
    ("assemble_dataset", {"assemble.corrupt_mode": "reverse"}, "assemble.corrupt_mode"),
    # train_student
    ("train_student", {"train.methods": {}}, "train.methods"),
    ("train_student", {"train.methods.post_thinking.loss.w_sem": 0.5},
     "train.methods.post_thinking.loss.w_sem"),
    ("train_student", {"train.sem.pooling": "rationale_mean",
                       "train.methods.answer_only.loss.w_sem": 0.3},
     "train.methods.answer_only.loss.w_sem"),
    ("train_student", {"assemble.methods": ["answer_only", "pst"]},
     "train.methods.pre_thinking: assemble.methods does not build"),
    ("train_student", {"train.methods": {"answer_only": {}}},
     "method 'pst' is not under train.methods"),
    ("train_student", {"train.defaults.model": "no-org/no-such-student"}, "train.defaults.model"),
    ("train_student", {"train.defaults.model": "no-org/gone", "hub": "answers"},
     "train.defaults.model: hub id 'no-org/gone' not found on the hub"),
    ("train_student", {"train.methods.pst.model": "./students/missing"}, "train.methods.pst.model"),
    ("train_student", {"train.defaults.device": "cuda", **CUDA}, "train.defaults.device"),
    ("train_student", {"train.defaults.lr": 0}, "train.defaults.lr"),
    ("train_student", {"train.sem.pooling": "max"}, "train.sem.pooling"),
    ("train_student", {"train.methods.pst.lorra": 1}, "train.methods.pst.lorra"),
    ("train_student", {"train.defaults.finetune": "qlora"}, "train.defaults.finetune"),
    # evaluate_student
    ("evaluate_student", {"evaluate.device": "cuda", **CUDA}, "evaluate.device"),
    ("evaluate_student", {"evaluate.batch_size": 0}, "evaluate.batch_size"),
    ("evaluate_student", {"evaluate.dtype": "fp8"}, "evaluate.dtype"),
    # report
    ("report", {"report.score": "best"}, "report.score"),
    ("report", {"report.smooth": 0}, "report.smooth"),
]


def edited(changes: dict) -> dict:
    params = yaml.safe_load(yaml.safe_dump(BASE))
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        target = params
        for part in path:
            target = target[int(part)] if part.isdigit() else target.setdefault(part, {})
        if last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value
    return params


def stage_command(stage: str, params: Path, missing: Path) -> list[str]:
    """The stage's command from dvc.yaml, every path under ``missing`` (which does not exist)."""
    spec = DVC["stages"][stage]
    cmd = spec.get("do", spec)["cmd"]
    for name in DVC["vars"][0]["paths"]:
        cmd = cmd.replace(f"${{paths.{name}}}", str(missing / name))
    cmd = re.sub(r"\$\{(key|item)\}", "pst", cmd)  # foreach over train.methods
    cmd = re.sub(r"\$\{item\.(\w+)\}", lambda m: MATRIX.get(m.group(1), "0"), cmd)  # matrix
    args = shlex.split(cmd)
    assert args[:2] == ["python", f"stages/{stage}.py"] and "${" not in cmd, cmd
    args[args.index("--params") + 1] = str(params)
    return [sys.executable, str(ROOT / args[1]), *args[2:]]


def case_params(case, tmp: Path) -> tuple[Path, str | None]:
    """Write the case's params under ``tmp``; returns (params file, hub mode or None)."""
    _, changes, _ = case
    changes = dict(changes)
    changes.pop("cpu_only", None)
    online = changes.pop("hub", None)
    tmp.mkdir(parents=True)
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump(edited(changes), sort_keys=False))
    return params, online


def run_case(case, tmp: Path, hub: LoopbackHub) -> dict:
    """The stage as DVC runs it: its own interpreter."""
    params, online = case_params(case, tmp)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("TRANSFORMERS_OFFLINE", None)
    if online:
        env.pop("HF_HUB_OFFLINE")
        env["HF_ENDPOINT"] = hub.url[online]
    start = time.perf_counter()
    out = subprocess.run(stage_command(case[0], params, tmp / "missing"), cwd=tmp, env=env,
                         capture_output=True, text=True, timeout=120)
    return {"rc": out.returncode, "stderr": out.stderr, "seconds": time.perf_counter() - start,
            "wrote": (tmp / "missing").exists()}


def run_in_process(case, tmp: Path, hub: LoopbackHub, monkeypatch, capsys) -> dict:
    """The stage's script run as ``__main__`` in this interpreter (its ``cli`` turns a bad
    input into ``error: ...`` and exit 2; anything else escapes as a traceback would)."""
    params, online = case_params(case, tmp)
    if online:
        go_online(monkeypatch, hub.url[online])
    else:
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    script, *args = stage_command(case[0], params, tmp / "missing")[1:]
    monkeypatch.setattr(sys, "argv", [script, *args])
    monkeypatch.chdir(tmp)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(script, run_name="__main__")
    return {"rc": stop.value.code, "stderr": capsys.readouterr().err,
            "wrote": (tmp / "missing").exists()}


@pytest.fixture(scope="module")
def hub():
    server = LoopbackHub()
    yield server
    server.close()


def check_refusal(res: dict, expected: str) -> None:
    assert res["rc"] == 2, res["stderr"][-2000:]
    assert expected in res["stderr"], res["stderr"][-2000:]
    assert res["stderr"].startswith("error: "), res["stderr"][-2000:]
    assert "Traceback" not in res["stderr"]
    assert not res["wrote"], "the stage wrote output before refusing its params"


def case_id(case) -> str:
    return f"{case[0]}-{'+'.join(k for k in case[1] if k != 'cpu_only')}"


def skip_on_cuda(case) -> None:
    if case[1].get("cpu_only") and _cuda_available():
        pytest.skip("this machine has CUDA: device cuda is a valid value here")


# the contract as DVC sees it, in the stage's own process: exit 2, one `error:` line, no
# traceback, nothing written, within LIMIT_S (start-up included); one case of each kind of
# check: a value, a task option, a model id checked offline, a hub that never answers, a
# device this machine lacks, a section's cross-check
def pick(stage: str, key: str, **also) -> tuple:
    return next(c for c in CASES if c[0] == stage and key in c[1]
                and all(c[1].get(k) == v for k, v in also.items()))


SUBPROCESS = [pick("prepare_data", "prepare.test_frac"),
              pick("prepare_data", "prepare.tasks.1.options"),
              pick("generate_rationales", "teacher.model", **TRANSFORMERS_TEACHER),
              pick("embed_rationales", "embed.model", hub="hang"),
              pick("train_student", "train.defaults.device"),
              pick("train_student", "assemble.methods"),
              pick("report", "report.score")]


@pytest.mark.parametrize("case", SUBPROCESS, ids=[case_id(c) for c in SUBPROCESS])
def test_a_bad_param_stops_the_stage_process_at_once(case, tmp_path, hub):
    skip_on_cuda(case)
    res = run_case(case, tmp_path / "case", hub)
    check_refusal(res, case[2])
    assert res["seconds"] < LIMIT_S, f"{res['seconds']:.1f} s"


# every case's message, in this interpreter (the process contract is the same code path)
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_bad_param_is_refused_naming_it(case, tmp_path, hub, monkeypatch, capsys):
    skip_on_cuda(case)
    check_refusal(run_in_process(case, tmp_path / "case", hub, monkeypatch, capsys), case[2])


def params_stages() -> list[str]:
    return sorted(name for name, spec in DVC["stages"].items()
                  if "--params" in spec.get("do", spec)["cmd"])


@pytest.mark.parametrize("stage", params_stages())
def test_every_stage_checks_its_params_before_it_reads_an_input(stage, tmp_path, hub,
                                                                monkeypatch, capsys):
    """Each stage of dvc.yaml that takes params refuses a bad common value before it
    touches its (here missing) inputs: the error names the value, not a file."""
    case = (stage, {"common.seed": -1}, "common.seed")
    check_refusal(run_in_process(case, tmp_path / "case", hub, monkeypatch, capsys), case[2])


def test_shipped_params_pass_every_stage_check():
    """The base of every case is valid for every stage, so each failure above is its edit's."""
    for section in SECTION_OF.values():
        load_section(ROOT / "params.yaml", section)


def test_good_params_and_a_missing_input_name_the_file(tmp_path):
    """Past the params check, a missing input is a one-line error naming the file."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(BASE))
    out = subprocess.run(stage_command("assemble_dataset", params, tmp_path / "missing"),
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.stderr.splitlines()[-1].startswith("error: ")
    assert str(tmp_path / "missing" / "rationales" / "train.jsonl") in out.stderr


def test_malformed_yaml_is_a_clean_error(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("common: {seed: [1\n")
    out = subprocess.run(stage_command("report", params, tmp_path / "missing"), cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert f"{params} is not valid YAML" in out.stderr
