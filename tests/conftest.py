"""Shared test helpers, and what every test may reach.

* Markers say what a test needs (pyproject.toml): ``model``, ``dvc``, ``vllm``, ``gpu``,
  ``network``. A test that loads a packaged model without the ``model`` marker fails, so
  the fast lane (``make test-fast``: none of these) stays free of model loads.
* Only loopback: a connection from this process to any other address fails unless the
  test is marked ``network``; DVC's usage reports are off for every process a test starts.
"""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

os.environ["DVC_NO_ANALYTICS"] = "1"  # dvc reports usage to the internet by default

# what a test's markers say it costs: with `-n 2 --dist loadfile` (make test) the costliest
# files start first, so the two workers end together
COST = {"vllm": 4, "dvc": 3, "model": 1}


def pytest_collection_modifyitems(config, items):
    """Files in order of their summed marker cost, the costliest first (stable within one)."""
    cost: dict[str, int] = {}
    for item in items:
        path = str(item.path)
        cost[path] = cost.get(path, 0) + sum(COST.get(m.name, 0) for m in item.iter_markers())
    items.sort(key=lambda item: -cost[str(item.path)])


def _loopback(sock: socket.socket, address) -> bool:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return True  # a Unix socket, ...: local by construction
    host = address[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: resolving it may already reach the network
        return False


@pytest.fixture(autouse=True)
def loopback_only(request, monkeypatch):
    if request.node.get_closest_marker("network"):
        return
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guard(sock, address):
        if not _loopback(sock, address):
            raise OSError(f"{request.node.nodeid} connects to {address!r}: tests reach only "
                          f"loopback unless marked network")

    def connect(sock, address):
        guard(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        guard(sock, address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture(autouse=True)
def model_loads_are_marked(request, monkeypatch):
    if request.node.get_closest_marker("model"):
        return

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} loads a packaged model: mark it `model` "
                             f"(and keep it out of tests/unit)")

    monkeypatch.setattr("pst_distill.models.packaged_model_dir", refuse)
    monkeypatch.setattr("pst_distill.embed.encode.load_embedder", refuse)


@pytest.fixture
def teacher_items():
    """``teacher_items(n)``: n offline arithmetic questions, deterministic."""
    from pst_distill.config.prepare import TaskSpec
    from pst_distill.tasks import build_task

    def make(n: int, seed: int = 0) -> list[dict]:
        spec = TaskSpec(name="multistep_arithmetic", n=n, options={"steps": 2, "max_value": 20})
        return build_task(spec, seed)

    return make


@pytest.fixture(scope="session")
def dvc_cache(tmp_path_factory):
    """One DVC cache for the session's project copies (``project.copy_project``): a stage
    that one test ran is restored from the run-cache in the next copy that asks for it with
    the same code, params and inputs. Tests of the teacher's cache and of remotes keep
    their own caches: a restore there would hide what they test."""
    return tmp_path_factory.mktemp("dvc-cache")
