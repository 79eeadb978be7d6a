"""Every bad value in params.yaml stops its stage at start-up: exit 2, the key named in one
message, no traceback, nothing written, within seconds (under 5 s).

Each case runs the real stage script as a subprocess, with the exact command line of
dvc.yaml, but every path pointing into a folder that does not exist: the error must come
from the params, before any input is read or any model loads. The shipped params.yaml is
the base; each case changes one thing.
"""

from __future__ import annotations

import http.server
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from pst_distill.config.sections import load_section

ROOT = Path(__file__).resolve().parents[2]
BASE = yaml.safe_load((ROOT / "params.yaml").read_text())
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
LIMIT_S = 5.0  # the bound; a refusal takes 1-2 s here (start-up), 2.5 s more if the hub hangs
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
# ``-`` deletes it. ``hub`` cases run online against a loopback server (see below).
CASES = [
    # prepare_data
    ("prepare_data", {"prepare.test_frac": 1.5}, "prepare.test_frac"),
    ("prepare_data", {"prepare.tasks.0.name": "coin_toss"}, "prepare.tasks.0.name"),
    ("prepare_data", {"prepare.tasks.0.options": {"k": 0}}, "prepare.tasks.0.options.k"),
    ("prepare_data", {"prepare.tasks.1.options": {"people": 3}},
     "prepare.tasks.1.options.people: unknown option; allowed option keys of coin_flip: k"),
    ("prepare_data", {"prepare.tasks.2.options": {"steps": 2, "max_vaule": 9}},
     "allowed option keys of multistep_arithmetic: steps, max_value"),
    ("prepare_data", {"prepare.tasks.0.n": None}, "prepare.tasks.0.n"),
    ("prepare_data", {"prepare.tasks.2.source": "hub"}, "prepare.tasks.2"),
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
    ("embed_rationales", {"embed.model": "no-org/not-on-the-hub", "hub": "404"},
     "embed.model: hub id 'no-org/not-on-the-hub' not found on the hub"),
    ("embed_rationales", {"embed.model": "org/real", "embed.revision": "v9", "hub": "404"},
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
    ("train_student", {"train.defaults.model": "no-org/gone", "hub": "404"},
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


class _Hub:
    """A loopback stand-in for the hub (the real one is unreachable here): ``404`` answers
    as the hub does (it knows only ``org/real``, at no revision but main: 404 with the
    hub's X-Error-Code header otherwise); ``hang`` accepts and never answers."""

    def __init__(self):
        class NotFound(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                real = self.path.startswith("/api/models/org/real/revision/")
                code = "RevisionNotFound" if real else "RepoNotFound"
                self.send_response(404)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"error": "not found"}')

            def log_message(self, *args):
                pass

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
        threading.Thread(target=self.http.serve_forever, args=(0.05,), daemon=True).start()
        self.silent = socket.socket()
        self.silent.bind(("127.0.0.1", 0))
        self.silent.listen(8)  # connections queue in the backlog; nothing ever answers
        self.url = {"404": f"http://127.0.0.1:{self.http.server_address[1]}",
                    "hang": f"http://127.0.0.1:{self.silent.getsockname()[1]}"}

    def close(self):
        self.http.shutdown()
        self.silent.close()


def run_case(case, tmp: Path, hub: _Hub) -> dict:
    stage, changes, _ = case
    changes = dict(changes)
    changes.pop("cpu_only", None)
    online = changes.pop("hub", None)
    tmp.mkdir(parents=True)
    params = tmp / "params.yaml"
    params.write_text(yaml.safe_dump(edited(changes), sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("TRANSFORMERS_OFFLINE", None)
    if online:
        env.pop("HF_HUB_OFFLINE")
        env["HF_ENDPOINT"] = hub.url[online]
    start = time.perf_counter()
    out = subprocess.run(stage_command(stage, params, tmp / "missing"), cwd=tmp, env=env,
                         capture_output=True, text=True, timeout=120)
    return {"rc": out.returncode, "stderr": out.stderr, "seconds": time.perf_counter() - start,
            "wrote": (tmp / "missing").exists()}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """All cases, two at a time (each is mostly interpreter start-up); those that wait on
    the network, and any that ran over the limit beside a neighbour, alone afterwards, so
    that the time measured is the stage's own (the first time is kept for the report)."""
    root = tmp_path_factory.mktemp("bad_params")
    hub = _Hub()
    waits = {i for i, case in enumerate(CASES) if case[1].get("hub") == "hang"}
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {i: pool.submit(run_case, case, root / f"case{i}", hub)
                       for i, case in enumerate(CASES) if i not in waits}
            done = {i: f.result() for i, f in futures.items()}
        for i in sorted(waits | {i for i, r in done.items() if r["seconds"] >= LIMIT_S}):
            first = done.get(i, {}).get("seconds")
            done[i] = {**run_case(CASES[i], root / f"case{i}-alone", hub), "first_seconds": first}
        return [done[i] for i in range(len(CASES))]
    finally:
        hub.close()


def test_enough_cases():
    assert len(CASES) >= 30 and set(SECTION_OF) == {c[0] for c in CASES}


@pytest.mark.parametrize("index", range(len(CASES)),
                         ids=[f"{c[0]}-{'+'.join(k for k in c[1] if k != 'cpu_only')}" for c in CASES])
def test_bad_param_stops_the_stage(results, index):
    stage, changes, expected = CASES[index]
    if changes.get("cpu_only") and _cuda_available():
        pytest.skip("this machine has CUDA: device cuda is a valid value here")
    res = results[index]
    assert res["rc"] == 2, res["stderr"][-2000:]
    assert expected in res["stderr"], res["stderr"][-2000:]
    assert res["stderr"].startswith("error: "), res["stderr"][-2000:]
    assert "Traceback" not in res["stderr"]
    assert not res["wrote"], "the stage wrote output before refusing its params"
    assert res["seconds"] < LIMIT_S, \
        f"{res['seconds']:.1f} s alone (beside another: {res.get('first_seconds')})"


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
