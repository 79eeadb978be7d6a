"""vLLM backend contract, against a FAKE ``vllm`` package written into tmp_path.

The fake mirrors vLLM >= 0.12 call shapes: ``SamplingParams`` and ``LLM`` reject any
keyword vLLM does not have (``guided_decoding`` included, removed in 0.12), and every call
is logged to a folder so the test can check what each worker received.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap

import pytest

from pst_distill.config import TeacherConfig
from pst_distill.teacher import generate_rationales
from pst_distill.teacher.base import request_seed

FAKE_VLLM = textwrap.dedent('''
    """FAKE vLLM for pst-distill contract tests: vLLM's call shapes, no GPU, no model."""
    import json, os, random, uuid

    __version__ = "0.0.0+fake"
    SP_FIELDS = {"n", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "max_tokens",
                 "min_tokens", "stop_token_ids", "logprobs", "structured_outputs",
                 "presence_penalty", "frequency_penalty", "repetition_penalty"}
    LLM_FIELDS = {"model", "revision", "tensor_parallel_size", "gpu_memory_utilization",
                  "max_model_len", "dtype", "enforce_eager", "trust_remote_code", "seed"}

    def _log(kind, obj):
        folder = os.environ.get("FAKE_VLLM_LOG")
        if folder:
            with open(os.path.join(folder, f"{os.getpid()}.jsonl"), "a") as fh:
                fh.write(json.dumps({"kind": kind, "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
                                     **obj}) + "\\n")

    class SamplingParams:
        def __init__(self, **kw):
            bad = set(kw) - SP_FIELDS
            if bad:
                raise TypeError(f"SamplingParams got unexpected keyword(s) {sorted(bad)}")
            self.kw = kw

    class CompletionOutput:
        def __init__(self, text, token_ids, finish_reason):
            self.text, self.token_ids, self.finish_reason = text, token_ids, finish_reason

    class RequestOutput:
        def __init__(self, prompt, prompt_token_ids, outputs):
            self.prompt, self.prompt_token_ids, self.outputs = prompt, prompt_token_ids, outputs

    class LLM:
        def __init__(self, **kw):
            bad = set(kw) - LLM_FIELDS
            if bad:
                raise TypeError(f"LLM got unexpected keyword(s) {sorted(bad)}")
            _log("init", {"kwargs": kw})
            fail_on = os.environ.get("FAKE_VLLM_FAIL_ON")
            if fail_on and fail_on == os.environ.get("CUDA_VISIBLE_DEVICES"):
                raise SystemExit(3)

        def generate(self, prompts, sampling_params, use_tqdm=True):
            outs = []
            for p, sp in zip(prompts, sampling_params):
                _log("request", {"prompt": p, "params": sp.kw})
                kw = sp.kw
                rng = random.Random(f"{p}|{kw['seed']}" if kw["temperature"] > 0 else p)
                words = ["step"] * rng.randint(1, 6) + ["\\nAnswer:", str(rng.randint(0, 99)), "\\n"]
                ids = list(range(len(words)))[: kw["max_tokens"]]
                finish = "length" if len(words) > kw["max_tokens"] else "stop"
                text = " ".join(words[: len(ids)])
                outs.append(RequestOutput(p, [1] * len(p.split()),
                                          [CompletionOutput(text, ids, finish)]))
            return outs
''')


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    root = tmp_path / "fake_vllm_site"
    (root / "vllm").mkdir(parents=True)
    (root / "vllm" / "__init__.py").write_text(FAKE_VLLM)
    logs = tmp_path / "fake_vllm_logs"
    logs.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PYTHONPATH", str(root))  # for the data-parallel worker processes
    monkeypatch.setenv("FAKE_VLLM_LOG", str(logs))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    module = importlib.import_module("vllm")
    assert module.__version__.endswith("+fake")

    def read_logs() -> list[dict]:
        return [json.loads(line) for f in sorted(logs.glob("*.jsonl"))
                for line in f.read_text().splitlines()]

    return read_logs


def cfg(**vllm) -> TeacherConfig:
    return TeacherConfig(backend="vllm", n=2, temperature=0.7, max_new_tokens=6,
                         vllm={"chunk_size": 3, **vllm})


@pytest.mark.slow  # converts the packaged model once (its tokenizer renders prompts)
def test_in_process_contract(fake_vllm, tmp_path, teacher_items):
    items = teacher_items(4)
    _, gens, stats = generate_rationales(items, cfg(tensor_parallel_size=2), "Answer:", 11,
                                         cache_dir=str(tmp_path / "cache"))
    log = fake_vllm()
    inits = [e for e in log if e["kind"] == "init"]
    assert len(inits) == 1 and inits[0]["kwargs"]["tensor_parallel_size"] == 2
    reqs = [e for e in log if e["kind"] == "request"]
    assert len(reqs) == 8 and len(gens) == 8  # 4 questions x n=2, chunked by 3
    by_prompt_seed = {(g["prompt"], request_seed(11, g["key"])) for g in gens}
    assert {(e["prompt"], e["params"]["seed"]) for e in reqs} == by_prompt_seed
    assert len({e["params"]["seed"] for e in reqs}) == 8  # one seed per request
    assert all(e["params"]["n"] == 1 and e["params"]["max_tokens"] == 6 for e in reqs)
    assert all(g["teacher"]["vllm"] == "0.0.0+fake" and "gpu" in g["teacher"] for g in gens)
    assert stats["finish_reasons"].keys() <= {"stop", "length"}

    _, again, stats2 = generate_rationales(items, cfg(tensor_parallel_size=2), "Answer:", 11,
                                           cache_dir=str(tmp_path / "fresh"))
    assert [g["rationale"] for g in again] == [g["rationale"] for g in gens]  # reproducible


@pytest.mark.slow
def test_data_parallel_workers(fake_vllm, tmp_path, teacher_items, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    items = teacher_items(5)
    conf = cfg(tensor_parallel_size=2, data_parallel_size=2)
    _, gens, stats = generate_rationales(items, conf, "Answer:", 3,
                                         cache_dir=str(tmp_path / "cache"))
    assert len({g["key"] for g in gens}) == len(gens) == 10
    log = fake_vllm()
    inits = sorted((e["cuda"], e["kwargs"]["tensor_parallel_size"]) for e in log
                   if e["kind"] == "init")
    assert inits == [("0,1", 2), ("2,3", 2)]
    reqs = [e for e in log if e["kind"] == "request"]
    per_worker = sorted(sum(e["cuda"] == c for e in reqs) for c in ("0,1", "2,3"))
    assert per_worker == [5, 5]
    settings = {json.dumps({k: v for k, v in e["params"].items() if k != "seed"}, sort_keys=True)
                for e in reqs}
    assert len(settings) == 1  # no sampling setting differs between workers
    assert {g["teacher"]["cuda_visible_devices"] for g in gens} == {"0,1", "2,3"}
    assert stats["cache"]["misses"] == 10

    _, gens2, stats2 = generate_rationales(items, conf, "Answer:", 3,
                                           cache_dir=str(tmp_path / "cache"))
    assert stats2["cache"]["hits"] == 10 and gens2 == gens
    assert len([e for e in fake_vllm() if e["kind"] == "init"]) == 2  # no new engine


@pytest.mark.slow
def test_data_parallel_worker_failure_stops_the_run(fake_vllm, tmp_path, teacher_items,
                                                    monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("FAKE_VLLM_FAIL_ON", "1")
    conf = cfg(data_parallel_size=2)
    with pytest.raises(RuntimeError, match=r"rank 1 \(CUDA_VISIBLE_DEVICES=1\) exit code 3"):
        generate_rationales(teacher_items(4), conf, "Answer:", 3,
                            cache_dir=str(tmp_path / "cache"))
