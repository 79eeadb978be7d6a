"""benchmarks/train_throughput.py: runs on CPU and prints one valid JSON line per config,
counts only real (non-padding) tokens, and builds the published model sizes. Untimed:
no assertion here depends on speed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "train_throughput.py"
pytestmark = pytest.mark.model  # loads the packaged tokenizer and trains tiny models
RUN_FIELDS = {"tokens_per_s", "real_tokens", "padded_tokens", "padding_frac", "seconds", "steps",
              "mfu", "peak_mem_bytes", "peak_mem_kind"}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tok(bench):
    return bench.student_tokenizer()


def test_tiny_cpu_prints_json_lines_with_the_fields(tmp_path):
    out = tmp_path / "bench.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--config", "tiny-cpu", "--steps", "2",
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stdout  # nothing else on stdout: one JSON line per config
    rec = json.loads(lines[0])
    assert out.read_text().splitlines() == lines
    assert rec["config"] == "tiny-cpu" and rec["device"] == "cpu" and rec["dtype"] == "float32"
    assert rec["steps"] == 2 and rec["warmup_steps"] == 1 and rec["batch"] == 8
    for key in ("hf", "ours", "ours_unpacked"):
        run = rec[key]
        assert RUN_FIELDS <= set(run), key
        assert run["steps"] == 2
        assert run["mfu"] is None  # no bf16 peak on CPU
        assert run["peak_mem_bytes"] > 0 and run["peak_mem_kind"].startswith("cpu_peak_rss")
        assert 0 < run["real_tokens"] <= run["padded_tokens"]
        # at most one batch of sequences of max_len each per step
        assert run["real_tokens"] <= 2 * rec["batch"] * rec["data"]["max_len"]
    assert rec["ratio_vs_hf"] == pytest.approx(
        rec["ours"]["tokens_per_s"] / rec["hf"]["tokens_per_s"], rel=1e-2)
    assert rec["packed_over_unpacked"] == pytest.approx(
        rec["ours"]["tokens_per_s"] / rec["ours_unpacked"]["tokens_per_s"], rel=1e-2)
    assert rec["data"]["sequences"] == 96 and rec["n_params"] > 0


def _examples(lengths):
    from pst_distill.train.data import Example
    from pst_distill.train.losses import ANSWER, IGNORE, NO_LOSS

    out = []
    for i, n in enumerate(lengths):
        ids = [100 + (7 * i + t) % 500 for t in range(n)]
        prompt = n // 2
        out.append(Example(ids, [IGNORE] * prompt + ids[prompt:],
                           [NO_LOSS] * prompt + [ANSWER] * (n - prompt), emb_row=i))
    return out


def test_real_tokens_are_the_non_padding_tokens(bench, tok):
    """Batch = the whole set, so every step sees each example once: by construction a step
    has sum(lengths) real tokens, and the padded layout len(set) * max(lengths) slots."""
    lengths = [5, 9, 13, 20]
    examples = _examples(lengths)
    cfg = bench.replace(bench.CONFIGS["tiny-cpu"], batch=len(lengths), steps=2, warmup=1)
    model = bench.build_model(cfg, tok, "cpu")
    hf = bench.hf_trainer_run(bench.copy.deepcopy(model), tok, examples, cfg.batch, cfg.steps,
                              cfg.warmup, "cpu")
    assert (hf["tokens"], hf["padded_tokens"], hf["steps"]) == (2 * 47, 2 * 4 * 20, 2)
    targets = bench.semantic_targets(examples)
    for packing, padded in ((True, 2 * 47), (False, 2 * 4 * 20)):
        ours = bench.ours_run(bench.copy.deepcopy(model), examples, targets, cfg, packing, "cpu",
                              tok.pad_token_id)
        assert (ours["tokens"], ours["padded_tokens"], ours["steps"]) == (2 * 47, padded, 2)


@pytest.mark.parametrize("arch,published", [("smollm2-135m", 134_515_008),
                                            ("qwen2.5-0.5b", 494_032_768)])
def test_random_init_configs_have_the_published_sizes(bench, tok, arch, published):
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(bench.arch_config(arch, tok))
    assert bench.n_params(model) == published


def test_mfu_uses_the_bf16_peak_of_the_device(bench):
    run = bench.summarise(tokens=1000, padded=1200, seconds=0.001, n=100_000_000, peak=989e12,
                          mem=(1, "x"), steps=1)
    assert run["mfu"] == pytest.approx(6 * 1e8 * 1e6 / 989e12, abs=1e-4)
    assert run["padding_frac"] == pytest.approx(200 / 1200, abs=1e-4)
