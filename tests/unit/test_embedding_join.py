"""Training joins assembled rows to the rationale embeddings by key (emb_key), not position."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pst_distill.assemble.build import assemble, write_datasets
from pst_distill.config.assemble import AssembleConfig
from pst_distill.config.common import FormatConfig
from pst_distill.embed.targets import EmbeddingMismatchError, join_embeddings
from pst_distill.io import content_hash, read_jsonl, write_json, write_npy

ROOT = Path(__file__).resolve().parents[2]


def records(n: int = 6) -> list[dict]:
    return [{"id": content_hash("q", i), "key": content_hash("q", i, 0), "task": "arith",
             "question": f"What is {i} + 1?", "answer": str(i + 1), "answer_type": "number",
             "rationale": f"{i} + 1 = {i + 1}."} for i in range(n)]


def vector_of(key: str, dim: int = 8) -> np.ndarray:
    """A distinct unit vector per key: the embedding a row must meet."""
    v = np.random.default_rng(int(key[:8], 16)).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def write_embeddings(folder: Path, keys: list[str]) -> tuple[Path, Path]:
    npy, kj = folder / "rationales.npy", folder / "keys.json"
    write_npy(npy, np.stack([vector_of(k) for k in keys]))
    write_json(kj, keys)
    return npy, kj


def assembled_rows(recs: list[dict], mode: str = "numbers", frac: float = 0.0) -> list[dict]:
    cfg = AssembleConfig(methods=["pst", "step_by_step"], corrupt_frac=frac, corrupt_mode=mode)
    data, _, _, _ = assemble(recs, cfg, FormatConfig(), 0)
    return data["pst"] + data["step_by_step"]


@pytest.mark.parametrize("order", ["same", "reversed", "rotated"])
def test_each_row_meets_its_own_embedding_whatever_the_matrix_order(tmp_path, order):
    recs = records()
    rows = assembled_rows(recs, "shuffle", 0.5)  # shuffle: some targets are the donor's
    keys = [r["key"] for r in recs]
    keys = {"same": keys, "reversed": keys[::-1], "rotated": keys[2:] + keys[:2]}[order]
    joined, matrix = join_embeddings(rows, *write_embeddings(tmp_path, keys))
    with_target = [r for r in joined if r["emb_key"] is not None]
    assert len(with_target) == 2 * len(recs)  # pst rows + step_by_step's explain rows
    for row in joined:
        if row["emb_key"] is None:
            assert row["emb_row"] is None
        else:
            np.testing.assert_array_equal(matrix[row["emb_row"]], vector_of(row["emb_key"]))
    assert any(r["emb_key"] != r["key"] for r in with_target)  # the donor case was exercised


def test_foreign_matrix_names_files_and_first_missing_key(tmp_path):
    recs = records()
    rows = assembled_rows(recs)
    npy, kj = write_embeddings(tmp_path, [r["key"] for r in recs[1:]] + [content_hash("another run")])
    with pytest.raises(EmbeddingMismatchError) as err:
        join_embeddings(rows, npy, kj)
    msg = str(err.value)
    assert str(npy) in msg and str(kj) in msg and recs[0]["key"] in msg


def test_rows_without_emb_key_are_refused(tmp_path):
    recs = records(2)
    rows = [{k: v for k, v in r.items() if k != "emb_key"} for r in assembled_rows(recs)]
    with pytest.raises(EmbeddingMismatchError, match=r"no emb_key.*re-run the assemble_dataset"):
        join_embeddings(rows, *write_embeddings(tmp_path, [r["key"] for r in recs]))


def test_train_stage_exits_2_on_mismatch_before_training(tmp_path):
    recs = records()
    write_datasets(tmp_path, {"pst": assembled_rows(recs)[:len(recs)]})
    npy, kj = write_embeddings(tmp_path, [r["key"] for r in recs[:-1]])
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")  # pst: w_sem > 0
    cmd = [sys.executable, str(ROOT / "stages/train_student.py"), "--params", "params.yaml",
           "--method", "pst", "--seed", "1", "--data", "pst.jsonl", "--embeddings", str(npy),
           "--keys", str(kj),
           "--out", "model", "--curve", "curve.tsv", "--metrics", "metrics.json",
           "--details", "details.json"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert recs[-1]["key"] in done.stderr and "keys.json" in done.stderr
    assert not (tmp_path / "model").exists()
    assert read_jsonl(tmp_path / "pst.jsonl")  # inputs untouched
