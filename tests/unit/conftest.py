"""tests/unit: pure logic. No test here needs a model, DVC, vLLM, a GPU or the network;
a test that does belongs in tests/integration (or tests/e2e, tests/gpu)."""

from __future__ import annotations

import pytest

HEAVY = ("model", "dvc", "vllm", "gpu", "network")


def pytest_collection_modifyitems(config, items):
    heavy = [item.nodeid for item in items if "tests/unit/" in item.nodeid.replace("\\", "/")
             and any(item.get_closest_marker(m) for m in HEAVY)]
    if heavy:
        raise pytest.UsageError(f"tests marked {', '.join(HEAVY)} belong outside tests/unit: "
                                + ", ".join(heavy))
