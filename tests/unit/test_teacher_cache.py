"""The teacher cache: content-addressed segments with an index, buffered writes, lookups
across the shared store and the local cache, damage found per entry, indexes rebuilt,
folding local segments into the store; the key of a generation; and the driver's use of
the cache (reference teacher, counted)."""

from __future__ import annotations

import hashlib
import json

import pytest

from pst_distill.config.teacher import TeacherConfig
from pst_distill.teacher.base import Completion
from pst_distill.teacher.cache import INDEX, SEGMENT, GenerationCache, fold, segments
from pst_distill.teacher.generate import build_requests, generate_rationales, sampling_from
from pst_distill.teacher.reference import ReferenceBackend

CFG = TeacherConfig(backend="reference")


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


# ------------------------------------------------------------------ the driver
class CountingBackend(ReferenceBackend):
    """The reference teacher, recording which keys it was asked for; can die after k."""

    def __init__(self, die_after: int | None = None):
        super().__init__(CFG, "Answer:")
        self.asked: list[str] = []
        self.die_after = die_after

    def generate(self, requests, sampling):
        for i, comp in enumerate(super().generate(requests, sampling)):
            if self.die_after is not None and i == self.die_after:
                raise KeyboardInterrupt("killed mid-run")
            self.asked.append(comp.key)
            yield comp


def run(items, cache_dir, backend=None):
    backend = backend or CountingBackend()
    kept, gens, stats = generate_rationales(items, CFG, "Answer:", 7, backend=backend,
                                            cache_dir=str(cache_dir))
    return backend, gens, stats


def dump(gens) -> str:
    return "".join(json.dumps(g, sort_keys=True) + "\n" for g in gens)


def test_unchanged_rerun_generates_nothing_and_writes_identical_output(tmp_path, teacher_items):
    items = teacher_items(12)
    first, gens1, stats1 = run(items, tmp_path)
    assert len(first.asked) == 12 and stats1["cache"]["misses"] == 12
    second, gens2, stats2 = run(items, tmp_path)
    assert second.asked == []
    assert stats2["cache"] == {"hits": 12, "misses": 0, "corrupt": 0, "written": 0}
    assert dump(gens1) == dump(gens2)


def test_added_questions_generate_only_the_new_ones(tmp_path, teacher_items):
    items = teacher_items(15)
    run(items[:10], tmp_path)
    backend, gens, stats = run(items, tmp_path)
    new_keys = {g["key"] for g in gens if g["id"] in {i["id"] for i in items[10:]}}
    assert sorted(backend.asked) == sorted(new_keys) and len(new_keys) == 5
    assert stats["cache"]["hits"] == 10


def test_killed_run_resumes_without_loss_or_duplicates(tmp_path, teacher_items):
    items = teacher_items(10)
    dying = CountingBackend(die_after=4)
    with pytest.raises(KeyboardInterrupt):
        run(items, tmp_path, dying)
    assert len(GenerationCache(tmp_path).keys()) == 4  # every finished one is on disk
    resumed, gens, stats = run(items, tmp_path)
    assert not set(resumed.asked) & set(dying.asked)
    assert len(resumed.asked) == 6 and stats["cache"]["hits"] == 4
    assert len({g["key"] for g in gens}) == len(gens) == 10
    _, clean, _ = run(items, tmp_path / "fresh")
    assert dump(gens) == dump(clean)


def test_corrupt_entry_is_regenerated_by_the_driver(tmp_path, teacher_items):
    items = teacher_items(6)
    _, gens, _ = run(items, tmp_path)
    victim = gens[2]["key"]
    [seg] = segments(tmp_path)
    lines = seg.read_bytes().splitlines(keepends=True)
    lines = [ln.replace(b"Answer:", b"Answer?") if victim.encode() in ln else ln for ln in lines]
    seg.write_bytes(b"".join(lines))
    backend, gens2, stats = run(items, tmp_path)
    assert backend.asked == [victim]
    assert stats["cache"]["corrupt"] == 1 and stats["cache"]["hits"] == 5
    assert dump(gens) == dump(gens2)


def test_stats_count_finish_reasons_tokens_and_cache(tmp_path, teacher_items):
    _, gens, stats = run(teacher_items(5), tmp_path)
    assert stats["finish_reasons"] == {"stop": 5}
    assert stats["completion_tokens"] == sum(g["completion_tokens"] for g in gens) > 0
    assert stats["kept"] + sum(stats["dropped"].values()) == 5
    assert set(stats["cache"]) == {"hits", "misses", "corrupt", "written"}


def test_backend_that_skips_a_request_fails_loudly(tmp_path, teacher_items):
    class Lossy(CountingBackend):
        def generate(self, requests, sampling):
            yield from list(super().generate(requests, sampling))[:-1]

    with pytest.raises(RuntimeError, match="without 1 of 3"):
        run(teacher_items(3), tmp_path, Lossy())


# ------------------------------------------------------------------ the key
SERVED = TeacherConfig(backend="openai", model="a-teacher")


def keys_of(items, cfg=SERVED, seed=7, prompt_suffix=""):
    """Request keys as a backend whose model id is ``teacher.model`` makes them (the
    OpenAI-compatible one renders the messages as sent; building it connects to nothing)."""
    from pst_distill.teacher.openai_backend import OpenAIBackend

    backend = OpenAIBackend(cfg, "Answer:")
    if prompt_suffix:
        backend.render = lambda messages: OpenAIBackend.render(backend, messages) + prompt_suffix
    return [r.key for r in build_requests(items, cfg, backend, sampling_from(cfg, seed),
                                          "Answer:", seed)]


def test_the_key_of_a_generation_is_fixed_by_what_makes_it(teacher_items):
    """The key depends on the rendered prompt, the teacher model and revision, the sampling
    settings with the seed and the sample index, and on nothing else: not the code (a
    fixed request keeps the key it had when this test was written, so a change of the code
    that derives keys, which would orphan every cached generation, fails here), not the
    batch size, the filters, the backend options or how the cache writes."""
    items = teacher_items(2)
    base = keys_of(items)
    assert base[0] == "3c7dbdc46e838fe18f892aa93bcd39c2"
    same = {"batch_size": 3, "only_correct": False, "max_items": 5,
            "cache": {"segment_size": 7, "flush_s": 0}, "vllm": {"chunk_size": 2},
            "openai": {"max_concurrency": 1}}
    for key, value in same.items():
        cfg = SERVED.model_copy(update={key: getattr(TeacherConfig(**{key: value}), key)})
        assert keys_of(items, cfg) == base, key
    differ = {"model": "other-teacher", "revision": "abc123", "temperature": 0.7,
              "top_p": 0.9, "max_new_tokens": 99, "stop": ["###"]}
    for key, value in differ.items():
        other = keys_of(items, SERVED.model_copy(update={key: value}))
        assert not set(other) & set(base), key
    assert not set(keys_of(items, seed=8)) & set(base)
    assert not set(keys_of(items, prompt_suffix=" ")) & set(base)
    sampled = keys_of(items[:1], SERVED.model_copy(update={"n": 2, "temperature": 0.7}))
    assert len(set(sampled)) == 2  # the sample index
