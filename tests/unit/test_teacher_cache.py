"""The per-generation cache and the driver's use of it (reference teacher, counted)."""

from __future__ import annotations

import json

import pytest

from pst_distill.config.teacher import TeacherConfig
from pst_distill.teacher.generate import generate_rationales
from pst_distill.teacher.base import Completion
from pst_distill.teacher.cache import GenerationCache
from pst_distill.teacher.reference import ReferenceBackend

CFG = TeacherConfig(backend="reference")


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


def test_entry_round_trip_keeps_metadata(tmp_path):
    cache = GenerationCache(tmp_path)
    comp = Completion(key="ab" * 16, text="x\nAnswer: 3", finish_reason="stop",
                      prompt_tokens=5, completion_tokens=4, prompt="p")
    cache.put(comp, {"backend": "t", "gpu": "H100"})
    got = cache.get(comp.key)
    assert got == comp and got.meta == {"backend": "t", "gpu": "H100"}
    assert cache.stats.as_dict() == {"hits": 1, "misses": 0, "corrupt": 0, "written": 1}
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "other_key"])
def test_corrupt_entry_is_detected_and_removed(tmp_path, damage):
    cache = GenerationCache(tmp_path)
    key = "cd" * 16
    cache.put(Completion(key=key, text="rationale\nAnswer: 12", finish_reason="stop"), {})
    path = cache.path(key)
    raw = path.read_text()
    if damage == "flip":
        path.write_text(raw.replace("Answer: 12", "Answer: 13"))
    elif damage == "truncate":
        path.write_text(raw[: len(raw) // 2])
    elif damage == "empty":
        path.write_text("")
    else:  # a valid entry under another key's name
        key = "ef" * 16
        cache.path(key).parent.mkdir(parents=True, exist_ok=True)
        cache.path(key).write_text(raw)
    assert cache.get(key) is None
    assert cache.stats.corrupt == 1 and not cache.path(key).exists()


def test_leftover_tmp_file_is_ignored(tmp_path):
    cache = GenerationCache(tmp_path)
    key = "12" * 16
    cache.path(key).parent.mkdir(parents=True)
    cache.path(key).with_name(f"{key}.json.tmp").write_text('{"half": ')
    assert cache.get(key) is None and cache.keys() == set()


def test_rejects_keys_that_are_not_hashes(tmp_path):
    with pytest.raises(ValueError, match="hex"):
        GenerationCache(tmp_path).path("../../etc/passwd")


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
    cache = GenerationCache(tmp_path)
    victim = gens[2]["key"]
    path = cache.path(victim)
    path.write_bytes(path.read_bytes()[:-20])
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
