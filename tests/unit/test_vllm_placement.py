"""vLLM backend arithmetic: even shards, GPU groups and CPU core sets per data-parallel
rank. The engine itself is tested for real in tests/integration/test_teacher_vllm.py."""

from __future__ import annotations

import pytest

from pst_distill.teacher.vllm_backend import cpu_groups, gpu_groups, shard_bounds


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


def test_cpu_groups_share_the_cores_without_overlap():
    assert cpu_groups(1, None, [0, 1]) == ["0,1"]
    assert cpu_groups(2, None, [0, 1]) == ["0", "1"]
    assert cpu_groups(2, 2, [4, 5, 6, 7, 8]) == ["4,5", "6,7"]
    with pytest.raises(RuntimeError, match="needs 6 cores, 4 are available"):
        cpu_groups(2, 3, [0, 1, 2, 3])
    with pytest.raises(RuntimeError, match="needs 3 cores, 2 are available"):
        cpu_groups(3, None, [0, 1])  # three engines would share two cores
