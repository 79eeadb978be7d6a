"""tests/unit is the fast lane (`make test-fast`): no model loads and no `slow` tests here.

A test that needs the packaged SmolLM2 (its tokenizer included: the alias converts the
model) or the MiniLM embedder belongs in tests/integration.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    slow = [item.nodeid for item in items
            if item.get_closest_marker("slow") and "tests/unit/" in item.nodeid.replace("\\", "/")]
    if slow:
        raise pytest.UsageError("slow tests belong in tests/integration, not tests/unit: "
                                + ", ".join(slow))


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a unit test loads a model; move it to tests/integration")

    monkeypatch.setattr("pst_distill.models.packaged_model_dir", refuse)
    monkeypatch.setattr("pst_distill.embed.encode.load_embedder", refuse)
