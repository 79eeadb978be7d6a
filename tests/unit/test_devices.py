"""Device and dtype choice, shared by the teacher, the student, evaluation and the embedder.
Both kinds of machine are tested on any machine: torch's CUDA probe is replaced by one that
answers as a machine with (or without) a CUDA device does."""

import pytest
import torch

from pst_distill.models import pick_device, pick_dtype


@pytest.fixture(params=[True, False], ids=["with-cuda", "without-cuda"])
def cuda(request, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: request.param)
    return request.param


def test_auto_is_cuda_exactly_when_there_is_one(cuda):
    assert pick_device("auto") == ("cuda" if cuda else "cpu")


def test_an_explicit_device_is_kept_when_the_machine_has_it(cuda):
    assert pick_device("cpu") == "cpu"
    if cuda:
        assert pick_device("cuda") == "cuda" and pick_device("cuda:1") == "cuda:1"


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_refused_by_name(device, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=f"device '{device}' was asked for but torch sees no CUDA"):
        pick_device(device)


def test_auto_dtype_is_bf16_on_cuda_only():
    assert pick_dtype("auto", "cpu") == torch.float32
    assert pick_dtype("auto", "cuda") == torch.bfloat16
    assert pick_dtype("auto", "cuda:0") == torch.bfloat16
    assert pick_dtype("float16", "cpu") == torch.float16
    assert pick_dtype("bfloat16", "cuda") == torch.bfloat16
