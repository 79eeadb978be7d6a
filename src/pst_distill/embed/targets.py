"""The embeddings file and its keys: read back, checked, joined to training rows.

The embedding stage writes two files: an ``.npy`` float32 matrix (row i) and a JSON list
of target keys (``keys[i]``). :func:`load_embeddings` reads them back and refuses any
mismatch (row count, dimension, norms, missing keys) with a message that says which file
is wrong, so a stale matrix can never silently feed the wrong target to a row; training
joins its rows to the matrix by key (:func:`join_embeddings`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from pst_distill.io import read_json, read_npy

log = logging.getLogger(__name__)

NORM_TOL = 1e-3


class EmbeddingMismatchError(ValueError):
    """The embeddings file and its key list (or the requested keys) do not line up."""


@dataclass(frozen=True)
class Embeddings:
    """Aligned targets: ``vectors[i]`` is the embedding of the rationale with ``keys[i]``."""

    vectors: np.ndarray
    keys: list[str]
    row_of: dict[str, int] = field(repr=False)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def rows(self, keys: Iterable[str]) -> list[int]:
        return [self.row_of[k] for k in keys]


def load_embeddings(npy: str | Path, keys_json: str | Path, expected_keys: Iterable[str] | None = None,
                    check_norms: bool = True) -> Embeddings:
    """Read and check an embeddings file and its key list; raise EmbeddingMismatchError."""
    vectors, keys = read_npy(npy), read_json(keys_json)
    where = f"{npy} / {keys_json}"
    _check_shape(vectors, keys, where)
    if check_norms:
        _check_norms(vectors, where)
    row_of = {k: i for i, k in enumerate(keys)}
    if expected_keys is not None:
        missing = [k for k in expected_keys if k not in row_of]
        if missing:
            raise EmbeddingMismatchError(
                f"{where}: {len(missing)} requested key(s) have no embedding, e.g. "
                f"{', '.join(missing[:3])}; re-run the embed_rationales stage")
    return Embeddings(vectors, keys, row_of)


def _check_shape(vectors: np.ndarray, keys, where: str) -> None:
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise EmbeddingMismatchError(f"{where}: the keys file must be a JSON list of strings")
    if vectors.ndim != 2 or vectors.dtype != np.float32:
        raise EmbeddingMismatchError(
            f"{where}: expected a 2-D float32 matrix, got shape {vectors.shape} {vectors.dtype}")
    if vectors.shape[0] != len(keys):
        raise EmbeddingMismatchError(
            f"{where}: {vectors.shape[0]} rows but {len(keys)} keys; the files are out of step")
    if len(set(keys)) != len(keys):
        raise EmbeddingMismatchError(f"{where}: duplicate keys in the key list")
    if not np.isfinite(vectors).all():
        raise EmbeddingMismatchError(f"{where}: non-finite values in the embeddings")


def _check_norms(vectors: np.ndarray, where: str) -> None:
    if len(vectors) == 0:
        return
    norms = np.linalg.norm(vectors, axis=1)
    worst = int(np.argmax(np.abs(norms - 1.0)))
    if abs(norms[worst] - 1.0) > NORM_TOL:
        raise EmbeddingMismatchError(
            f"{where}: row {worst} has norm {norms[worst]:.4f}, expected unit vectors "
            "(embed.normalize: true), or pass check_norms=False")


def join_embeddings(rows: list[dict], npy: str | Path,
                    keys_json: str | Path) -> tuple[list[dict], np.ndarray]:
    """``(rows, matrix)`` for training: each row's ``emb_row`` re-derived from its ``emb_key``
    against ``keys_json``, the key list of the matrix in ``npy``.

    Raises :class:`EmbeddingMismatchError`, naming both files and the first
    missing key, when a row's target has no embedding (a stale or foreign matrix), or when
    rows with a rationale carry no ``emb_key`` (assembled before keys were recorded).
    """
    keyless = [i for i, r in enumerate(rows)
               if r.get("emb_row") is not None and not r.get("emb_key")]
    if keyless:
        raise EmbeddingMismatchError(
            f"assembled row {keyless[0]} has an emb_row but no emb_key, so it cannot be checked "
            f"against {keys_json}; re-run the assemble_dataset stage")
    wanted = list(dict.fromkeys(r["emb_key"] for r in rows if r.get("emb_key")))
    # norms are not checked here: embed.normalize may be false (train reads only its section)
    emb = load_embeddings(npy, keys_json, expected_keys=wanted, check_norms=False)
    moved = sum(1 for r in rows if r.get("emb_key") and r["emb_row"] != emb.row_of[r["emb_key"]])
    if moved:
        log.info("%d row(s) found their embedding at another row than at assembly time", moved)
    joined = [{**r, "emb_row": emb.row_of[r["emb_key"]] if r.get("emb_key") else None}
              for r in rows]
    return joined, emb.vectors
