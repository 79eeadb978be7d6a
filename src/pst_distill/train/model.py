"""The student and its semantic head as one ``nn.Module`` whose ``forward`` returns the
loss parts as sums, so DDP, FSDP and accelerate can wrap it like any model.

Everything that produces gradients runs inside :meth:`PSTModel.forward`: the decoder,
the LM head (on supervised positions only: the prompt is most of a short sequence, so
logits are [M, V], not [B, T, V]) and the semantic head. The caller turns the sums into
the loss with :func:`pst_distill.train.losses.combine` and effective-batch denominators.
"""

from __future__ import annotations

import inspect
import logging

import torch
from torch import Tensor, nn

from pst_distill.formats import control_tokens
from pst_distill.models import load_causal_lm, load_tokenizer
from pst_distill.train import losses

log = logging.getLogger(__name__)


class SemanticHead(nn.Module):
    """Student vector s = Linear(d_model → d_hidden) → GELU → Linear(→ d_embed)."""

    def __init__(self, d_model: int, d_hidden: int, d_embed: int):
        super().__init__()
        self.dims = {"d_model": d_model, "d_hidden": d_hidden, "d_embed": d_embed}
        self.net = nn.Sequential(nn.Linear(d_model, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_embed))

    def forward(self, h: Tensor) -> Tensor:  # [N, d_model] -> [N, d_embed]
        return self.net(h.to(self.net[0].weight.dtype))


def base_model(student):
    """The transformers model under a peft wrapper (the model itself otherwise)."""
    return student.get_base_model() if hasattr(student, "get_base_model") else student


class PSTModel(nn.Module):
    """``student`` (plain or peft causal LM) + optional :class:`SemanticHead`.

    ``forward(batch)`` takes a batch of :mod:`pst_distill.data` (either layout) and returns
    ``{"ce": [4] CE sums of (answer, rationale, [SEM] token, think-first), "sem": summed
    semantic loss}``,
    both float32.
    """

    def __init__(self, student, head: SemanticHead | None = None, *,
                 pooling: losses.Pooling = "sem_token", sem_loss: losses.SemLoss = "cosine",
                 temperature: float = 0.05, liger: bool = False):
        super().__init__()
        self.student, self.head = student, head
        self.pooling, self.sem_loss, self.temperature = pooling, sem_loss, temperature
        self.flce = liger_loss() if liger else None

    def forward(self, batch: dict) -> dict[str, Tensor]:
        base = base_model(self.student)
        hidden = base.get_decoder()(**decoder_inputs(batch, base.config)).last_hidden_state
        mask, next_ids, next_parts = losses.select_supervised(batch["labels"], batch["parts"])
        ce = self._ce(hidden[mask], next_ids, next_parts, base.get_output_embeddings())
        return {"ce": ce, "sem": self._sem(hidden, batch)}

    def _ce(self, h: Tensor, targets: Tensor, parts: Tensor, lm_head) -> Tensor:
        if self.flce is None:
            return losses.part_ce_sums_flat(lm_head(h), targets, parts)
        # Liger never materialises the [M, V] logits; one call per part (disjoint tokens)
        sums = [self.flce(lm_head.weight, h[parts == p], targets[parts == p]).float()
                if bool((parts == p).any()) else h.new_zeros((), dtype=torch.float32)
                for p in losses.CE_PARTS]
        return torch.stack(sums)

    def _sem(self, hidden: Tensor, batch: dict) -> Tensor:
        if self.head is None or "sem_target" not in batch:
            return hidden.new_zeros((), dtype=torch.float32)
        flat = hidden.reshape(-1, hidden.size(-1))
        parts, seq = batch["parts"].reshape(-1), batch["seq_index"].reshape(-1)
        valid = losses.sem_rows_flat(self.pooling, batch["sem_flat"], parts, seq, batch["emb_row"])
        if not bool(valid.any()):  # keep the head in the graph: DDP expects its gradients
            return sum(p.sum() for p in self.head.parameters()).float() * 0.0
        pooled = losses.pool_flat(flat, self.pooling, batch["sem_flat"], parts, seq,
                                  int(batch["emb_row"].numel()))[valid]
        target = batch["sem_target"][valid].to(pooled.device)
        return losses.semantic_loss(self.head(pooled), target, self.sem_loss, self.temperature).sum()


def decoder_inputs(batch: dict, config) -> dict:
    """Decoder kwargs: the padded layout passes its attention mask; the packed layout passes
    restarting position_ids and no mask (transformers then builds the block-diagonal mask
    for sdpa/eager/flex; flash_attention_2 gets one flat row with varlen boundaries)."""
    kwargs = {"input_ids": batch["input_ids"], "use_cache": False}  # a cache disables packing
    if "attention_mask" in batch:
        kwargs["attention_mask"] = batch["attention_mask"]
        return kwargs
    kwargs["position_ids"] = batch["position_ids"]
    if getattr(config, "_attn_implementation", None) == "flash_attention_2":
        kwargs.update(flash_varlen_kwargs(batch["position_ids"]))
    return kwargs


def flash_varlen_kwargs(position_ids: Tensor) -> dict:
    """cu_seq_lens / max_length for FlashAttention-2 varlen over all rows at once: computed
    once per batch instead of in every layer. Rows concatenated end to end form one
    sequence stream; every restart of position_ids starts a new sequence."""
    flat = position_ids.reshape(-1)
    starts = torch.nonzero(flat == 0).flatten()
    cu = torch.cat([starts, starts.new_tensor([flat.numel()])]).to(torch.int32)
    longest = int((cu[1:] - cu[:-1]).max())
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest,
            "max_length_k": longest}


def liger_loss():
    """Liger's fused linear cross-entropy (sums), or a clear error when it is missing."""
    try:
        from liger_kernel.transformers.fused_linear_cross_entropy import (
            LigerFusedLinearCrossEntropyLoss)
    except ImportError as exc:
        raise ValueError("train.liger: true needs the Liger kernels: "
                         "pip install 'pst-distill[liger]' (CUDA only)") from exc
    return LigerFusedLinearCrossEntropyLoss(reduction="sum")


def resolve_attn(setting: str, device: str) -> str:
    """``auto``: FlashAttention-2 on CUDA where flash_attn is installed, else sdpa."""
    import importlib.util

    if setting != "auto":
        return setting
    if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def wrap_student(student, settings, device: str, head: SemanticHead | None = None
                 ) -> PSTModel:
    """A :class:`PSTModel` around ``student`` configured by ``settings``: attention
    implementation, gradient checkpointing, torch.compile of the decoder layers (in place:
    the state dict keeps its names), Liger."""
    base = base_model(student)
    attn = resolve_attn(settings.attn_implementation, device)
    if getattr(base.config, "_attn_implementation", None) != attn:
        base.set_attn_implementation(attn)
    if settings.gradient_checkpointing:  # renamed in transformers 5
        if hasattr(base, "activation_checkpointing_enable"):
            base.activation_checkpointing_enable({"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if settings.compile:
        for layer in base.get_decoder().layers:
            layer.compile(dynamic=True)
    model = PSTModel(student, head, pooling=settings.sem.pooling, sem_loss=settings.sem.loss,
                     temperature=settings.sem.temperature, liger=settings.liger)
    model._no_split_modules = getattr(base, "_no_split_modules", None)  # FSDP wrap policy
    return model.to(device)


def build_pst_model(settings, sem_token: str, device: str, targets_dim: int | None = None,
                    controls: dict | None = None):
    """(PSTModel, tokenizer, [SEM] id): the student of ``settings.model`` (full or LoRA,
    float32 weights) and, with a semantic loss, a fresh head of width ``targets_dim``;
    ``controls``: adaptive's mode controls (:func:`load_student`)."""
    student, tok, sem_id = load_student(settings, sem_token, device, controls)
    head = build_head(student, settings, targets_dim)
    return wrap_student(student, settings, device, head), tok, sem_id


# ------------------------------------------------------------------ the student
def build_head(model, settings, targets):
    """The semantic head (None without a semantic loss); ``targets`` is the embedding
    matrix (or its width)."""
    if settings.loss.w_sem <= 0:
        return None
    if targets is None:
        raise ValueError("w_sem > 0 needs the rationale embeddings (--embeddings)")
    d_embed = targets if isinstance(targets, int) else int(targets.shape[1])
    head = SemanticHead(int(model.config.hidden_size), settings.sem.hidden, d_embed)
    return head.to(next(model.parameters()).device)


def mode_controls(method: str, fmt) -> dict | None:
    """adaptive: ``{mode: (control tokens, the delimiter its rows start from)}``."""
    if method != "adaptive":
        return None
    return {"fast": (control_tokens("fast", fmt), fmt.answer_prefix),
            "think": (control_tokens("think", fmt), fmt.rationale_prefix)}


def add_special(tokenizer, token: str) -> int:
    """Register ``token`` as a special token (idempotent); return its id."""
    if token not in tokenizer.get_vocab():
        # keep the tokenizer's other extra special tokens (kwarg renamed in transformers 5)
        names = inspect.signature(tokenizer.add_special_tokens).parameters
        keep = {k: False for k in ("replace_extra_special_tokens",
                                   "replace_additional_special_tokens") if k in names}
        tokenizer.add_special_tokens({"additional_special_tokens": [token]}, **keep)
    ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"special token {token!r} does not tokenise to one id: {ids}")
    return ids[0]


def add_sem_token(tokenizer, sem_token: str) -> int:
    """Register [SEM] as a special token (idempotent); return its id."""
    return add_special(tokenizer, sem_token)


def load_student(settings, sem_token: str, device: str,
                 controls: dict[str, tuple[list[str], str]] | None = None):
    """(model in float32 on ``device``, tokenizer with [SEM] and a pad token, sem id).

    ``controls``: the adaptive student's mode controls, ``{mode: (special tokens, text)}``;
    each token is added and its input-embedding row starts at the mean embedding of
    ``text`` (the delimiter that follows it), so the two modes differ from the first step.
    """
    tok = load_tokenizer(settings.model, settings.revision, settings.trust_remote_code)
    sem_id = add_sem_token(tok, sem_token)
    control_ids = {mode: [add_special(tok, t) for t in tokens]
                   for mode, (tokens, _) in (controls or {}).items()}
    model, tok = load_causal_lm(settings.model, settings.revision, device, "float32",
                                settings.trust_remote_code, tokenizer=tok)
    for mode, ids in control_ids.items():
        init_rows(model, tok, ids, controls[mode][1])
    if settings.finetune == "lora":
        model = wrap_lora(model, settings.lora, [sem_id, *(i for ids in control_ids.values() for i in ids)])
    model.train()
    return model, tok, sem_id


def init_rows(model, tok, ids: list[int], text: str) -> None:
    """Input-embedding rows ``ids`` := the mean embedding of ``text``'s tokens."""
    import torch

    emb = model.get_input_embeddings().weight
    src = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        emb[ids] = emb[src].mean(0).to(emb.dtype)


def wrap_lora(model, opts, token_ids: list[int]):
    """LoRA adapters plus trainable rows of the input (and tied output) embedding for the
    added tokens ``token_ids`` ([SEM], mode controls)."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=opts.r, lora_alpha=opts.alpha, lora_dropout=opts.dropout,
                     target_modules=list(opts.target_modules), trainable_token_indices=token_ids,
                     task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("LoRA r=%d: %d trainable parameters", opts.r, trainable)
    return model
