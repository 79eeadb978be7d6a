"""Few-shot prompts come from a fixed pool per task, chosen by id hash: adding or removing
questions outside the pool changes no prompt, and so no teacher cache key."""

from __future__ import annotations

from pst_distill.config.prepare import TaskSpec
from pst_distill.config.teacher import TeacherConfig
from pst_distill.teacher.prompts import pick_shots, shot_pools, shot_rank
from pst_distill.tasks import build_task
from pst_distill.teacher.generate import build_requests, sampling_from
from pst_distill.teacher.reference import ReferenceBackend

SEED, N_SHOTS = 3, 2


def items(n: int, seed: int) -> list[dict]:
    out = []
    for name, options in (("multistep_arithmetic", {"steps": 2, "max_value": 30}),
                          ("coin_flip", {"k": 3})):
        out += build_task(TaskSpec(name=name, n=n, options=options), seed)
    return out


def pool_ids(pools) -> dict[str, list[str]]:
    return {task: [r["id"] for r in pool] for task, pool in pools.items()}


def outside_pool(candidates: list[dict], pools) -> list[dict]:
    """Candidates that rank after every pool item of their task."""
    last = {task: shot_rank(SEED, pool[-1]["id"]) for task, pool in pools.items()}
    return [c for c in candidates if shot_rank(SEED, c["id"]) > last[c["task"]]]


def cache_keys(its: list[dict]) -> dict[str, str]:
    cfg = TeacherConfig(backend="reference", prompt="few_shot_cot", n_shots=N_SHOTS)
    backend = ReferenceBackend(cfg, "Answer:")
    reqs = build_requests(its, cfg, backend, sampling_from(cfg, SEED), "Answer:", SEED)
    return {r.item["id"]: r.key for r in reqs}


def test_shots_same_task_never_the_item_and_from_the_pool():
    its = items(20, seed=0)
    pools = shot_pools(its, N_SHOTS, SEED)
    assert {t: len(p) for t, p in pools.items()} == {"multistep_arithmetic": 3, "coin_flip": 3}
    for item in its:
        shots = pick_shots(item, pools, N_SHOTS)
        assert len(shots) == N_SHOTS
        assert all(s["task"] == item["task"] and s["id"] != item["id"] for s in shots)
        assert all(s in pools[item["task"]] and s["reference_rationale"] for s in shots)


def test_added_questions_change_no_prompt_or_cache_key():
    its = items(20, seed=0)
    pools = shot_pools(its, N_SHOTS, SEED)
    added = outside_pool(items(20, seed=1), pools)
    assert len(added) >= 20  # most new questions rank after a pool of 3 among 20
    before = cache_keys(its)
    after = cache_keys(its + added)
    assert pool_ids(shot_pools(its + added, N_SHOTS, SEED)) == pool_ids(pools)
    assert {i: after[i] for i in before} == before


def test_removed_questions_change_no_prompt_or_cache_key():
    its = items(20, seed=0)
    pools = shot_pools(its, N_SHOTS, SEED)
    in_pool = {r["id"] for pool in pools.values() for r in pool}
    kept = [r for i, r in enumerate(its) if r["id"] in in_pool or i % 3]
    assert len(kept) < len(its)
    before = cache_keys(its)
    assert cache_keys(kept) == {i: before[i] for i in (r["id"] for r in kept)}


def test_order_of_items_does_not_matter():
    its = items(10, seed=0)
    assert cache_keys(its[::-1]) == cache_keys(its)


def test_a_question_that_ranks_first_joins_the_pool():
    """The one case that does change prompts: the new question is among the first by hash."""
    its = items(20, seed=0)
    pools = shot_pools(its, N_SHOTS, SEED)
    first = min(items(40, seed=2), key=lambda r: shot_rank(SEED, r["id"]))
    assert shot_rank(SEED, first["id"]) < shot_rank(SEED, pools[first["task"]][0]["id"])
    assert shot_pools(its + [first], N_SHOTS, SEED)[first["task"]][0]["id"] == first["id"]


def test_no_worked_solution_no_shots():
    its = [{**r, "reference_rationale": None} for r in items(5, seed=0)]
    pools = shot_pools(its, N_SHOTS, SEED)
    assert pools == {} and pick_shots(its[0], pools, N_SHOTS) == []
