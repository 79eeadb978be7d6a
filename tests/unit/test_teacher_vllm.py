"""vLLM backend: even shards, GPU groups per rank, and the error without vLLM installed.
The contract against a fake ``vllm`` package is in tests/integration/test_teacher_vllm_fake_module.py."""

from __future__ import annotations

import sys

import pytest

from pst_distill.config import TeacherConfig
from pst_distill.teacher.vllm_backend import VllmBackend, gpu_groups, shard_bounds


def cfg(**vllm) -> TeacherConfig:
    return TeacherConfig(backend="vllm", n=2, temperature=0.7, max_new_tokens=6,
                         vllm={"chunk_size": 3, **vllm})


def test_shards_are_even_and_cover_everything():
    for n in range(0, 23):
        for size in range(1, 6):
            bounds = [shard_bounds(n, size, r) for r in range(size)]
            sizes = [e - s for s, e in bounds]
            assert sum(sizes) == n and max(sizes) - min(sizes) <= 1
            assert all(bounds[i][1] == bounds[i + 1][0] for i in range(size - 1))


def test_gpu_groups_per_rank():
    assert gpu_groups(2, 2, "4,5,6,7") == ["4,5", "6,7"]
    assert gpu_groups(3, 1, None) == ["0", "1", "2"]
    with pytest.raises(RuntimeError, match="needs 4 GPUs"):
        gpu_groups(2, 2, "0,1")


def test_missing_vllm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(RuntimeError, match="pip install 'pst-distill\\[vllm\\]'"):
        VllmBackend(cfg(), "Answer:")
