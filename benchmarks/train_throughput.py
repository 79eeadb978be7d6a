"""Training throughput: HF ``Trainer`` with its defaults against our trainer, on the same
model and the same variable-length data, side by side in one process.

    python benchmarks/train_throughput.py [--config NAME|cuda] [--steps N] [--warmup N]
        [--batch N] [--device cpu|cuda] [--out FILE] [--max-items N]

* HF Trainer: ``DataCollatorForLanguageModeling(mlm=False)`` (pad to the longest sequence
  of the batch), ``per_device_train_batch_size`` = batch, bf16 AMP on CUDA, every other
  argument at its default (AdamW, no packing, no compile).
* ours: :func:`pst_distill.train.bench.throughput` on a :class:`pst_distill.train.model.PSTModel`
  (the PST loss with its semantic head), padding-free packing, ``torch.compile`` on CUDA;
  on CPU also unpacked, for the packed/unpacked ratio.

Data: the rows of ``data/assembled/pst.jsonl`` when the pipeline has made them, else the
embedded default's questions (params.yaml ``prepare`` tasks with their reference
rationales, as the ``reference`` teacher gives them) in the ``pst`` format, tokenised
with the SmolLM2 tokenizer; the lengths are reported. Both trainers draw batches of
``batch`` sequences from the same examples.

One JSON line per config on stdout (and appended to ``--out``): real (non-padding)
tokens/s of each trainer, ``ratio_vs_hf``, MFU = 6·N·tokens/s over the device's dense
bf16 peak (null on CPU or an unknown GPU), peak memory (CUDA: max_memory_allocated;
CPU: the process's peak RSS, reset before each run), device, dtype, batch, timed steps
and the warm-up steps left out of the timing (compilation happens there).

Configs: ``tiny-cpu`` (a 2-layer random Llama; the test runs it, untimed); on CUDA
``smollm2-135m-random`` and ``qwen2.5-0.5b-random`` (random init from the published
sizes, no hub access needed) and ``smollm2-135m`` (the pretrained packaged student);
``cuda`` runs those three. Numbers depend on the machine; compare rows of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

STUDENT = "smollm2-135m-instruct"
EMB_DIM = 384            # all-MiniLM-L6-v2, the default embedder
MAX_LENGTH = 192         # params.yaml train.defaults.max_length
PACK_LENGTH = 512        # profiles/gpu.yaml train.defaults.pack_length (the GPU experiment's)
PEAK_BF16 = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12),
             ("A100", 312e12))  # dense bf16 FLOP/s by device-name substring, first match

# published sizes (the hub configs of HuggingFaceTB/SmolLM2-135M and Qwen/Qwen2.5-0.5B)
ARCHS = {
    "tiny": ("llama", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=2048, tie_word_embeddings=True)),
    "smollm2-135m": ("llama", dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                   num_hidden_layers=30, num_attention_heads=9,
                                   num_key_value_heads=3, max_position_embeddings=8192,
                                   rope_theta=100000.0, rms_norm_eps=1e-5,
                                   tie_word_embeddings=True)),
    "qwen2.5-0.5b": ("qwen2", dict(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                                   num_hidden_layers=24, num_attention_heads=14,
                                   num_key_value_heads=2, max_position_embeddings=32768,
                                   rope_theta=1000000.0, rms_norm_eps=1e-6,
                                   tie_word_embeddings=True, use_sliding_window=False)),
}


@dataclass(frozen=True)
class BenchConfig:
    name: str
    model: str        # an ARCHS key (random init) or "pretrained" (the packaged student)
    device: str
    batch: int        # sequences per optimizer step, both trainers
    steps: int        # timed optimizer steps
    warmup: int       # untimed steps first (compilation, allocator warm-up)
    compile: bool
    unpacked: bool    # also time our trainer without packing
    max_items: int | None = None
    attn: str = "auto"  # our trainer's attn_implementation
    pack_length: int = PACK_LENGTH


CONFIGS = {c.name: c for c in (
    BenchConfig("tiny-cpu", "tiny", "cpu", 8, 4, 1, False, True, max_items=96),
    BenchConfig("smollm2-135m-random", "smollm2-135m", "cuda", 128, 20, 3, True, False),
    BenchConfig("qwen2.5-0.5b-random", "qwen2.5-0.5b", "cuda", 64, 15, 3, True, False),
    BenchConfig("smollm2-135m", "pretrained", "cuda", 128, 20, 3, True, False),
)}
# the pretrained student first: it is the configuration the experiment trains
GROUPS = {"cuda": ["smollm2-135m", "smollm2-135m-random", "qwen2.5-0.5b-random"],
          "random-init": ["smollm2-135m-random", "qwen2.5-0.5b-random"]}


# --------------------------------------------------------------------------- data
def embedded_rows(params: str, method: str = "pst") -> list[dict]:
    """The embedded default's training rows in ``method``'s format, built in-process: the
    prepare tasks of ``params`` (train split) with their reference rationales."""
    from pst_distill.config.sections import load_section
    from pst_distill.formats import training_sequences
    from pst_distill.tasks import build_task, split_records

    common, prep = load_section(params, "prepare")
    records = [r for spec in prep.tasks for r in build_task(spec, common.seed)]
    train, _ = split_records(records, prep.test_frac)
    rows = []
    for i, it in enumerate(train):
        for seq in training_sequences(method, it["question"], it["answer"],
                                      it["reference_rationale"], common.format):
            rows.append({"id": it["id"], "emb_row": i, "segments": [s.as_dict() for s in seq]})
    return rows


def load_examples(tok, data: str | None, params: str, max_items: int | None, seed: int = 0):
    """(examples, description of the data): assembled rows if there, else embedded rows."""
    from pst_distill.io import read_jsonl
    from pst_distill.train.data import encode_rows_cached
    from pst_distill.train.losses import IGNORE

    path = Path(data) if data else Path("data/assembled/pst.jsonl")
    if path.exists():
        rows, source = read_jsonl(path), str(path)
    elif data:
        raise FileNotFoundError(f"--data {data}: no such file")
    else:
        rows, source = embedded_rows(params), f"embedded ({params} prepare tasks, pst format)"
    if max_items and max_items < len(rows):
        keep = np.random.default_rng(seed).permutation(len(rows))[:max_items]
        rows = [rows[i] for i in sorted(keep)]
    # the pipeline's token cache: the same rows and tokenizer are tokenised once
    examples, _ = encode_rows_cached(rows, tok, MAX_LENGTH, True, None, ".cache/tokens")
    lengths = np.array([len(e) for e in examples])
    supervised = sum(sum(label != IGNORE for label in e.labels[1:]) for e in examples)
    info = {"source": source, "sequences": len(examples), "mean_len": round(float(lengths.mean()), 1),
            "std_len": round(float(lengths.std()), 1), "min_len": int(lengths.min()),
            "max_len": int(lengths.max()),
            # ours runs the LM head on these positions only; MFU counts 6·N for every token
            "supervised_frac": round(supervised / max(int(lengths.sum()), 1), 3)}
    return examples, info


def semantic_targets(examples, seed: int = 0) -> np.ndarray:
    """Unit vectors standing in for the rationale embeddings (the head's cost, not its fit)."""
    rows = max(max(e.emb_row for e in examples) + 1, 1)
    emb = np.random.default_rng(seed).normal(size=(rows, EMB_DIM)).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


# --------------------------------------------------------------------------- models
def student_tokenizer():
    from transformers import AutoTokenizer

    from pst_distill.config.common import FormatConfig
    from pst_distill.train.model import add_sem_token
    from pst_distill.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model(STUDENT))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    add_sem_token(tok, FormatConfig().sem_token)
    return tok


def arch_config(name: str, tok):
    from transformers import LlamaConfig, Qwen2Config

    kind, sizes = ARCHS[name]
    sizes = {"vocab_size": len(tok), **sizes}
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
           "pad_token_id": tok.pad_token_id}
    return (LlamaConfig if kind == "llama" else Qwen2Config)(**sizes, **ids)


def build_model(cfg: BenchConfig, tok, device: str = "cpu", seed: int = 0):
    """A float32 causal LM on ``device`` with room for every token id of ``tok``."""
    from transformers import AutoModelForCausalLM

    from pst_distill.models import resolve_model

    torch.manual_seed(seed)
    if cfg.model == "pretrained":
        model = AutoModelForCausalLM.from_pretrained(resolve_model(STUDENT), dtype=torch.float32)
        model.to(device)
    else:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(arch_config(cfg.model, tok), dtype=torch.float32)
    if len(tok) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tok))
    return model.train()


def n_params(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


# --------------------------------------------------------------------------- measuring
def peak_tflops(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16 if key in name), None)


def reset_peak_memory(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets the peak RSS (VmHWM) of this process
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory(device: str) -> tuple[int | None, str]:
    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_memory_allocated"
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024, "cpu_peak_rss"
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "cpu_peak_rss_process"


def summarise(tokens: int, padded: int, seconds: float, n: int, peak: float | None,
              mem: tuple[int | None, str], steps: int) -> dict:
    tps = tokens / max(seconds, 1e-9)
    return {"tokens_per_s": round(tps, 1), "real_tokens": int(tokens), "padded_tokens": int(padded),
            "padding_frac": round(1 - tokens / max(padded, 1), 4), "seconds": round(seconds, 3),
            "steps": steps, "mfu": None if peak is None else round(6 * n * tps / peak, 4),
            "peak_mem_bytes": mem[0], "peak_mem_kind": mem[1]}


# --------------------------------------------------------------------------- HF Trainer
def hf_trainer_run(model, tok, examples, batch: int, steps: int, warmup: int, device: str,
                   seed: int = 0) -> dict:
    """``steps`` timed optimizer steps of a default HF Trainer after ``warmup`` untimed ones.

    Real tokens are the attention-mask ones of the batches that reach ``training_step``;
    padded tokens are the batches' full size."""
    from transformers import (DataCollatorForLanguageModeling, Trainer, TrainerCallback,
                              TrainingArguments)

    cuda = device.startswith("cuda")
    counts = {"real": [], "padded": []}

    class CountingTrainer(Trainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            if self.state.global_step >= warmup:  # steps already done before this one
                mask = inputs["attention_mask"]
                counts["real"].append(mask.sum())  # a device tensor: no sync per step
                counts["padded"].append(mask.numel())
            return super().training_step(model, inputs, num_items_in_batch)

    class Clock(TrainerCallback):
        """Wall time from the end of step ``warmup`` to the end of step warmup + steps."""

        def __init__(self):
            self.start = self.end = None

        def _now(self) -> float:
            if cuda:
                torch.cuda.synchronize(device)
            return time.perf_counter()

        def on_train_begin(self, args, state, control, **kw):
            if warmup == 0:
                self.start = self._now()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == warmup:
                self.start = self._now()
            elif state.global_step == warmup + steps:
                self.end = self._now()

    clock = Clock()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=batch,
                                 max_steps=warmup + steps, bf16=cuda, use_cpu=not cuda,
                                 save_strategy="no", logging_strategy="no", report_to="none",
                                 disable_tqdm=True, seed=seed)
        dataset = [{"input_ids": e.input_ids} for e in examples]
        trainer = CountingTrainer(model=model, args=args, train_dataset=dataset,
                                  data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
                                  callbacks=[clock])
        with contextlib.redirect_stdout(sys.stderr):  # its end-of-training dict is no JSON line
            trainer.train()
    real = int(sum(int(c) for c in counts["real"]))
    return {"tokens": real, "padded_tokens": int(sum(counts["padded"])),
            "seconds": clock.end - clock.start, "steps": len(counts["real"])}


# --------------------------------------------------------------------------- ours
def our_settings(cfg: BenchConfig, packing: bool, device: str):
    from pst_distill.config.sections import parse

    defaults = {"model": STUDENT, "finetune": "full", "steps": cfg.warmup + cfg.steps,
                "batch_size": cfg.batch, "grad_accum": 1, "lr": 5e-5, "warmup_steps": 0,
                "schedule": "constant", "max_length": MAX_LENGTH, "packing": packing,
                "pack_length": cfg.pack_length, "compile": cfg.compile and packing,
                "attn_implementation": cfg.attn,
                "device": "cuda" if device.startswith("cuda") else "cpu"}
    raw = {"defaults": defaults, "sem": {"weight": 1.0},
           "methods": {"pst": {"loss": {"w_answer": 1.0, "w_rationale": 0.1}}}}
    return parse("train", raw).methods["pst"]


def ours_run(student, examples, targets, cfg: BenchConfig, packing: bool, device: str,
             pad_id: int) -> dict:
    from pst_distill.train.model import wrap_student
    from pst_distill.train.bench import throughput
    from pst_distill.train.model import build_head

    settings = our_settings(cfg, packing, device)
    head = build_head(student, settings, int(targets.shape[1]))
    model = wrap_student(student, settings, device, head)
    out = throughput(model, examples, settings, cfg.steps, pad_id=pad_id, device=device,
                     warmup=cfg.warmup, targets=targets)
    return {"tokens": out["tokens"], "padded_tokens": out["padded_tokens"],
            "seconds": out["seconds"], "steps": out["steps"]}


# --------------------------------------------------------------------------- one config
def measure(fn, device: str, n: int, peak: float | None) -> dict:
    reset_peak_memory(device)
    res = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    return summarise(res["tokens"], res["padded_tokens"], res["seconds"], n, peak,
                     peak_memory(device), res["steps"])


def free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def run_config(cfg: BenchConfig, tok, examples, data_info: dict) -> dict:
    """HF Trainer, then ours (and ours unpacked), each on its own copy of the same initial
    weights; the master copy stays on the CPU so no run's peak memory holds another's model."""
    device = cfg.device
    targets = semantic_targets(examples)
    master = build_model(cfg, tok, device).to("cpu")  # random init is fast on a GPU
    n, peak = n_params(master), peak_tflops(device)

    def fresh():
        return copy.deepcopy(master).to(device)

    runs = {"hf": measure(lambda: hf_trainer_run(fresh(), tok, examples, cfg.batch, cfg.steps,
                                                 cfg.warmup, device), device, n, peak)}
    free(device)
    variants = [("ours", True)] + ([("ours_unpacked", False)] if cfg.unpacked else [])
    for key, packing in variants:
        runs[key] = measure(lambda: ours_run(fresh(), examples, targets, cfg, packing, device,
                                             tok.pad_token_id), device, n, peak)
        free(device)
    return record(cfg, runs, n, peak, data_info)


def attn_used(cfg: BenchConfig) -> str:
    from pst_distill.train.model import resolve_attn

    return resolve_attn(cfg.attn, cfg.device)


def record(cfg: BenchConfig, runs: dict, n: int, peak: float | None, data_info: dict) -> dict:
    import transformers

    device = cfg.device
    cuda = device.startswith("cuda")
    hf = runs["hf"]["tokens_per_s"]
    out = {"config": cfg.name, "model": cfg.model, "n_params": n, "device": device,
           "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
           "dtype": "bf16-autocast" if cuda else "float32", "batch": cfg.batch,
           "steps": cfg.steps, "warmup_steps": cfg.warmup, "compile": cfg.compile,
           "attn_implementation": attn_used(cfg),
           "pack_length": cfg.pack_length, "peak_flops": peak, **runs,
           "ratio_vs_hf": round(runs["ours"]["tokens_per_s"] / max(hf, 1e-9), 3)}
    if "ours_unpacked" in runs:
        out["packed_over_unpacked"] = round(runs["ours"]["tokens_per_s"] /
                                            max(runs["ours_unpacked"]["tokens_per_s"], 1e-9), 3)
    out.update({"data": data_info, "torch": torch.__version__,
                "transformers": transformers.__version__,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return out


# --------------------------------------------------------------------------- CLI
def pick_configs(args) -> list[BenchConfig]:
    name = args.config or ("cuda" if torch.cuda.is_available() else "tiny-cpu")
    names = GROUPS.get(name, [name])
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"error: unknown --config {name!r}; choose from "
                         f"{', '.join([*CONFIGS, *GROUPS])}")
    chosen = []
    for cfg in (CONFIGS[n] for n in names):
        over = {k: v for k, v in (("steps", args.steps), ("warmup", args.warmup),
                                  ("batch", args.batch), ("max_items", args.max_items),
                                  ("attn", args.attn), ("pack_length", args.pack_length))
                if v is not None}
        if args.device:
            over["device"] = args.device
            over["compile"] = cfg.compile and args.device == "cuda"
        if args.unpacked:
            over["unpacked"] = True
        cfg = replace(cfg, **over)
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise SystemExit(f"error: config {cfg.name!r} needs CUDA (or pass --device cpu)")
        chosen.append(cfg)
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help=f"one of {', '.join([*CONFIGS, *GROUPS])} "
                                     "(default: cuda if available, else tiny-cpu)")
    ap.add_argument("--steps", type=int, help="timed optimizer steps (overrides the config)")
    ap.add_argument("--warmup", type=int, help="untimed steps first (overrides the config)")
    ap.add_argument("--batch", type=int, help="sequences per step, both trainers")
    ap.add_argument("--device", choices=["cpu", "cuda"], help="run a config on another device")
    ap.add_argument("--unpacked", action="store_true", help="also time ours without packing")
    ap.add_argument("--attn", choices=["auto", "sdpa", "eager", "flash_attention_2", "flex_attention"],
                    help="our trainer's train.attn_implementation (default auto)")
    ap.add_argument("--pack-length", type=int,
                    help=f"tokens per packed row (default {PACK_LENGTH}, the GPU experiment's)")
    ap.add_argument("--max-items", type=int, help="cap on the training sequences used")
    ap.add_argument("--data", help="assembled rows (default data/assembled/pst.jsonl if present)")
    ap.add_argument("--params", default="params.yaml", help="for the embedded rows")
    ap.add_argument("--out", help="also append the JSON lines to this file")
    args = ap.parse_args()
    configs = pick_configs(args)
    tok = student_tokenizer()
    for cfg in configs:
        examples, info = load_examples(tok, args.data, args.params, cfg.max_items)
        line = json.dumps(run_config(cfg, tok, examples, info))
        print(line, flush=True)
        if args.out:
            with open(args.out, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")


if __name__ == "__main__":
    sys.exit(main())
