"""Device and dtype choice, shared by the teacher, the student, evaluation and the embedder."""

import pytest
import torch

from pst_distill.models import pick_device, pick_dtype


def test_auto_picks_cuda_only_when_there_is_one():
    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_refused_by_name(device):
    with pytest.raises(RuntimeError, match=f"device '{device}' was asked for but torch sees no CUDA"):
        pick_device(device)


def test_auto_dtype_is_bf16_on_cuda_only():
    assert pick_dtype("auto", "cpu") == torch.float32
    assert pick_dtype("auto", "cuda:0") == torch.bfloat16
    assert pick_dtype("float16", "cpu") == torch.float16

