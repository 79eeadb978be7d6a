"""Where and how a run computes: the accelerate ``Accelerator`` (DDP, FSDP2, bf16 autocast),
the precision record the metrics carry, and re-launching a stage on several processes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import torch

log = logging.getLogger(__name__)


def cpu_supports_bf16() -> bool:
    """Native bf16 matmuls (AVX512-BF16 or AMX). Without them bf16 autocast is emulated and
    measured 2-4x slower than float32 on a 2-core AVX512 Xeon, so it is not used there."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = next((ln for ln in fh if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def mixed_precision(device: str, settings) -> str:
    """accelerate's ``mixed_precision``: bf16 on CUDA where supported; on CPU only when
    ``cpu_bf16`` asks and the CPU has native bf16 (default off: float32 on every CPU)."""
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    native = cpu_supports_bf16() and torch.amp.is_autocast_available("cpu")
    return "bf16" if settings.cpu_bf16 and native else "no"


def precision_record(device: str, settings) -> dict:
    """What the metrics say about the arithmetic: weights, autocast, matmul precision."""
    mp = mixed_precision(device, settings)
    kind = device.split(":")[0]
    return {"bf16_autocast": mp == "bf16", "weights_dtype": "float32",
            "compute_dtype": "bfloat16" if mp == "bf16" else "float32",
            "autocast": f"torch.autocast({kind}, bfloat16)" if mp == "bf16" else "none",
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


def make_accelerator(settings, device: str):
    """A fresh Accelerator (several runs may share a process, e.g. in tests)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=not torch.distributed.is_initialized())
    GradientState._reset_state()
    kwargs = {"cpu": not device.startswith("cuda"), "step_scheduler_with_optimizer": False,
              "mixed_precision": mixed_precision(device, settings)}
    if settings.distributed.fsdp:
        from accelerate import FullyShardedDataParallelPlugin

        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(
            fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
            state_dict_type="FULL_STATE_DICT", reshard_after_forward=True)
    return Accelerator(**kwargs)


def in_distributed_launch() -> bool:
    """True inside torchrun / accelerate launch (or any launcher that sets WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ or "LOCAL_RANK" in os.environ


def relaunch(processes: int, argv: list[str]) -> int:
    """Run this script again on ``processes`` processes (torch.distributed.run, one
    machine) and return its exit code. Called by a stage that was started as one process
    while its params ask for several."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={processes}", *argv]
    log.info("launching %d processes: %s", processes, " ".join(cmd))
    return subprocess.run(cmd, check=False).returncode
