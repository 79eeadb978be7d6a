"""The segment store of teacher generations: content-addressed segments with an index,
buffered writes, lookups across the shared and the local folder, damage found per entry,
indexes rebuilt, and folding local segments into the shared store."""

from __future__ import annotations

import hashlib

import pytest

from pst_distill.teacher.base import Completion
from pst_distill.teacher.store import INDEX, SEGMENT, GenerationCache, fold, segments


def comp(i: int, text: str | None = None) -> Completion:
    return Completion(key=f"{i:032x}", text=text or f"step {i}\nAnswer: {i}", finish_reason="stop",
                      prompt_tokens=5, completion_tokens=4 + i, prompt=f"prompt {i}")


def write(folder, ids, **kw) -> GenerationCache:
    cache = GenerationCache(folder, **kw)
    for i in ids:
        cache.put(comp(i), {"backend": "test", "i": i})
    cache.close()
    return cache


def test_round_trip_keeps_metadata_and_names_segments_by_their_bytes(tmp_path):
    write(tmp_path, range(5))
    [seg] = segments(tmp_path)
    assert seg.stem == hashlib.sha256(seg.read_bytes()).hexdigest()
    assert seg.with_suffix(INDEX).exists() and not list(tmp_path.glob("*.tmp"))
    cache = GenerationCache(None, read=[tmp_path])
    got = cache.get(comp(3).key)
    assert got == comp(3) and got.meta == {"backend": "test", "i": 3}
    assert cache.get(f"{99:032x}") is None
    assert cache.stats.as_dict() == {"hits": 1, "misses": 1, "corrupt": 0, "written": 0}


def test_a_segment_per_segment_size_generations_and_at_close(tmp_path):
    cache = GenerationCache(tmp_path, segment_size=4, flush_s=1e9)
    for i in range(10):
        cache.put(comp(i), {})
        assert len(segments(tmp_path)) == (i + 1) // 4  # nothing waits beyond 4
    cache.close()
    assert len(GenerationCache(None, read=[tmp_path]).keys()) == 10
    assert len(segments(tmp_path)) == 3
    assert cache.has(comp(9).key)  # what this cache wrote is found again at once


def test_the_same_generations_twice_are_one_segment(tmp_path):
    write(tmp_path / "a", range(3))
    write(tmp_path / "b", range(3))
    assert [s.name for s in segments(tmp_path / "a")] == [s.name for s in segments(tmp_path / "b")]


@pytest.mark.parametrize("damage", ["flip", "truncate", "other_key"])
def test_a_damaged_entry_is_a_miss_the_rest_of_its_segment_is_not(tmp_path, damage):
    write(tmp_path, range(3))
    [seg] = segments(tmp_path)
    lines = seg.read_bytes().splitlines(keepends=True)
    if damage == "flip":
        lines[1] = lines[1].replace(b"Answer: 1", b"Answer: 7")
    elif damage == "truncate":
        lines[1] = lines[1][:40] + b"\n" + b" " * (len(lines[1]) - 41)
    else:
        lines[1] = lines[1].replace(comp(1).key.encode(), comp(2).key.encode())
    seg.write_bytes(b"".join(lines))
    cache = GenerationCache(None, read=[tmp_path])
    assert cache.get(comp(1).key) is None and cache.stats.corrupt == 1
    assert cache.get(comp(0).key) == comp(0) and cache.get(comp(2).key) == comp(2)


def test_a_regenerated_entry_beside_its_damaged_copy_is_found(tmp_path):
    shared, local = tmp_path / "shared", tmp_path / "local"
    write(shared, [1])
    [seg] = segments(shared)
    seg.write_bytes(seg.read_bytes().replace(b"Answer: 1", b"Answer: 9"))
    write(local, [1])  # what the run regenerated
    cache = GenerationCache(local, read=[shared])
    assert cache.get(comp(1).key) == comp(1) and cache.stats.corrupt == 0


def test_a_missing_index_is_rebuilt_from_its_segment(tmp_path):
    write(tmp_path, range(4))
    [seg] = segments(tmp_path)
    seg.with_suffix(INDEX).unlink()  # a crash between the segment and its index
    cache = GenerationCache(None, read=[tmp_path])
    assert cache.keys() == {comp(i).key for i in range(4)}
    assert cache.get(comp(2).key) == comp(2)


def test_no_folder_means_no_cache(tmp_path):
    cache = GenerationCache(None)
    cache.put(comp(1), {})
    cache.close()
    assert cache.get(comp(1).key) is None and not list(tmp_path.iterdir())


def test_fold_moves_local_segments_into_the_store_once(tmp_path):
    store, local = tmp_path / "store", tmp_path / "local"
    write(store, range(3))
    write(local, range(3))  # the same generations: the same segment
    write(local, range(3, 6))
    moved = fold(local, store)
    assert len(moved) == 1 and not list(local.glob(f"*{SEGMENT}")) and not list(local.glob("*.idx"))
    assert GenerationCache(None, read=[store]).keys() == {comp(i).key for i in range(6)}
    write(local, [7])
    next(local.glob(f"*{INDEX}")).unlink()
    assert len(fold(local, store)) == 1  # its index is rebuilt on the way
    assert len(list(store.glob(f"*{INDEX}"))) == len(segments(store)) == 3
