import json
import os

import numpy as np
import pytest

from pst_distill.io import (atomic_path, content_hash, read_jsonl, read_npy, write_json,
                            write_jsonl, write_npy)


def test_jsonl_round_trip(tmp_path):
    recs = [{"id": "a", "x": 1}, {"id": "b", "text": "ünï"}]
    assert write_jsonl(tmp_path / "r.jsonl", recs) == 2
    assert read_jsonl(tmp_path / "r.jsonl") == recs


def test_atomic_write_keeps_old_file_on_crash(tmp_path):
    path = tmp_path / "out.json"
    write_json(path, {"v": 1})

    def broken():
        yield {"v": 2}
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(path, broken())
    assert json.loads(path.read_text()) == {"v": 1}
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_atomic_path_moves_into_place(tmp_path):
    with atomic_path(tmp_path / "sub" / "f.txt") as tmp:
        tmp.write_text("x")
        assert not (tmp_path / "sub" / "f.txt").exists()
    assert (tmp_path / "sub" / "f.txt").read_text() == "x"


def test_npy_without_pickle(tmp_path):
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    write_npy(tmp_path / "a.npy", arr)
    np.testing.assert_array_equal(read_npy(tmp_path / "a.npy"), arr)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        read_npy(tmp_path / "obj.npy")


def test_read_jsonl_names_bad_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_jsonl(p)


def test_content_hash_stable():
    assert content_hash({"b": 1, "a": 2}) == content_hash({"a": 2, "b": 1})
    assert content_hash("x", 1) != content_hash("x", 2)
    assert len(content_hash("x", length=32)) == 32
    assert os.sep not in content_hash("a/b")
