"""Statistics for comparing methods: accuracy intervals, paired differences, baselines.

Pure numpy. The unit of data is a correctness matrix ``correct`` of shape ``[S, Q]``
(S training seeds × Q test questions, bool or 0/1), where every seed — and every method
compared with it — answered the SAME Q questions in the SAME order (``aligned_by_task``
builds such matrices from prediction rows and refuses misaligned ones). A 1-D array is
read as one seed.

Seeds and questions are crossed (each seed answers every question), so a bootstrap
replicate draws its question indices once and applies them to every seed (and, for a
paired difference, to both methods). Drawing them independently per seed would treat
the S×Q answers as independent and shrink the interval by up to √S when seeds agree
on which questions they get right.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from statistics import NormalDist
from typing import Mapping, Sequence

import numpy as np

from pst_distill.parsing import INVALID

LABEL_TYPES = ("yes-no", "choice")
_CHUNK_CELLS = 2_000_000  # bootstrap replicates are drawn in chunks of ~this many cells


@dataclass(frozen=True)
class Interval:
    """An accuracy with its interval: ``mean`` in ``[lo, hi]`` at ``level``."""

    mean: float
    lo: float
    hi: float
    n_seeds: int
    n_questions: int
    method: str  # "wilson" | "bootstrap-seeds-questions" | "wilson (bootstrap degenerate)"
    level: float = 0.95


@dataclass(frozen=True)
class PairedDiff:
    """Accuracy of A minus accuracy of B on the same questions and seeds."""

    mean: float
    lo: float
    hi: float
    n_seeds: int
    n_questions: int
    excludes_zero: bool
    p_value: float  # two-sided percentile-bootstrap p-value (approximate)
    method: str
    level: float = 0.95


@dataclass(frozen=True)
class Baseline:
    """A constant predictor: the label it always answers, and its accuracy on the test set."""

    name: str  # "majority" (of the training labels) | "best constant" (in hindsight on test)
    label: str
    accuracy: Interval


def as_matrix(correct, name: str = "correct") -> np.ndarray:
    """``correct`` as a float ``[S, Q]`` matrix of 0/1; a 1-D array is one seed."""
    arr = np.asarray(correct)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name}: expected a non-empty [seeds, questions] array, got shape {arr.shape}")
    if arr.dtype == object or not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name}: values must be booleans or 0/1")
    return arr.astype(float)


def _check_level(level: float, n_boot: int | None = None) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot is not None and n_boot < 100:
        raise ValueError(f"n_boot must be at least 100, got {n_boot}")


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n."""
    _check_level(level)
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"wilson: need 0 <= k <= n and n > 0, got k={k}, n={n}")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # clip rounding (e.g. 1.0000000000000002); at k=0 / k=n the bound is exactly 0 / 1
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return float(lo), float(hi)


def _boot_means(values: np.ndarray, n_boot: int, rng: np.random.Generator,
                resample_seeds: bool) -> np.ndarray:
    """``n_boot`` replicates of ``values.mean()`` for a ``[S, Q]`` matrix: optionally
    resample seeds, then question indices shared by all seeds of the replicate."""
    n_seeds, n_q = values.shape
    chunk = max(1, _CHUNK_CELLS // (n_seeds * n_q))
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        if resample_seeds:
            per_q = values[rng.integers(0, n_seeds, (size, n_seeds))].mean(axis=1)  # [size, Q]
        else:
            per_q = np.broadcast_to(values.mean(axis=0), (size, n_q))
        q_idx = rng.integers(0, n_q, (size, n_q))
        out[start:start + size] = np.take_along_axis(per_q, q_idx, axis=1).mean(axis=1)
    return out


def _percentile(boot: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def accuracy_interval(correct, n_boot: int = 2000, rng_seed: int = 0,
                      level: float = 0.95) -> Interval:
    """Mean accuracy of a ``[S, Q]`` correctness matrix with a ``level`` interval.

    One seed: Wilson score interval over the Q questions. Several seeds: two-level
    percentile bootstrap (resample seeds, then questions shared by the resampled seeds),
    ``n_boot`` replicates from ``numpy.random.default_rng(rng_seed)``. When every answer is
    right (or every one wrong) the bootstrap collapses to a point, so the Wilson interval
    over the Q questions is used instead (named as such in ``method``).
    """
    _check_level(level, n_boot)
    values = as_matrix(correct)
    n_seeds, n_q = values.shape
    mean = float(values.mean())
    if n_seeds == 1 or mean in (0.0, 1.0):
        k = int(round(values.mean(axis=0).sum()))
        lo, hi = wilson(k, n_q, level)
        name = "wilson" if n_seeds == 1 else "wilson (bootstrap degenerate)"
        return Interval(mean, lo, hi, n_seeds, n_q, name, level)
    boot = _boot_means(values, n_boot, np.random.default_rng(rng_seed), resample_seeds=True)
    lo, hi = _percentile(boot, level)
    return Interval(mean, lo, hi, n_seeds, n_q, "bootstrap-seeds-questions", level)


def paired_difference(correct_a, correct_b, n_boot: int = 2000, rng_seed: int = 0,
                      level: float = 0.95, resample_seeds: bool | None = None) -> PairedDiff:
    """Accuracy of A minus B, both ``[S, Q]`` on the same seeds (rows) and questions (columns).

    Statistic: the mean over seeds of the per-seed mean difference. Interval: paired
    percentile bootstrap — each replicate draws one vector of question indices and applies
    it to both methods and every seed, so a question's difficulty cancels in the
    difference. ``resample_seeds`` (default: whenever there are several seeds) first
    resamples the seed rows (the same rows for A and B), so the interval also carries the
    spread between training seeds: without it, three seeds that happened to agree resolved
    a difference that six seeds did not (docs/results.md).
    """
    _check_level(level, n_boot)
    a, b = as_matrix(correct_a, "correct_a"), as_matrix(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"paired difference needs the same [seeds, questions] shape, "
                         f"got {a.shape} and {b.shape}")
    if resample_seeds is None:
        resample_seeds = a.shape[0] > 1
    diff = a - b
    mean = float(diff.mean())
    boot = _boot_means(diff, n_boot, np.random.default_rng(rng_seed), resample_seeds)
    lo, hi = _percentile(boot, level)
    # a replicate equal to 0 counts for both sides: identical methods give p = 1
    p = min(1.0, 2 * min(float((boot <= 0).mean()), float((boot >= 0).mean())))
    name = "paired bootstrap (seeds, questions)" if resample_seeds else "paired bootstrap (questions)"
    return PairedDiff(mean, lo, hi, a.shape[0], a.shape[1], bool(lo > 0 or hi < 0), p, name, level)


def _constant_accuracy(label: str, test_labels: Sequence[str], level: float) -> Interval:
    hits = sum(str(t) == label for t in test_labels)
    lo, hi = wilson(hits, len(test_labels), level)
    return Interval(hits / len(test_labels), lo, hi, 1, len(test_labels), "wilson", level)


def _most_common(labels: Sequence[str]) -> str:
    """The most frequent label; ties go to the first in sorted order (deterministic)."""
    counts = Counter(str(x) for x in labels)
    return min(counts, key=lambda lab: (-counts[lab], lab))


def majority_baseline(train_labels: Sequence[str], test_labels: Sequence[str],
                      level: float = 0.95) -> Baseline:
    """Always answer the most frequent TRAINING label; its accuracy on the test labels."""
    if not train_labels or not test_labels:
        raise ValueError("majority baseline needs non-empty train and test labels")
    label = _most_common(train_labels)
    return Baseline("majority", label, _constant_accuracy(label, test_labels, level))


def best_constant_baseline(test_labels: Sequence[str], level: float = 0.95) -> Baseline:
    """The best constant answer chosen in hindsight on the test labels: an upper bound on
    every constant predictor (the test's majority share)."""
    if not test_labels:
        raise ValueError("best constant baseline needs non-empty test labels")
    label = _most_common(test_labels)
    return Baseline("best constant", label, _constant_accuracy(label, test_labels, level))


def label_histogram(predictions, labels: Sequence[str] = ()) -> dict[str, int]:
    """Counts of predicted labels over all seeds and questions (``predictions`` is any
    nesting of strings, e.g. ``[S, Q]``). Keys: ``labels`` and every predicted label in
    sorted order, then ``[invalid]`` last (always present, possibly 0)."""
    flat = [str(x) for x in np.asarray(predictions, dtype=object).ravel()]
    counts = Counter(flat)
    keys = sorted((set(map(str, labels)) | set(counts)) - {INVALID})
    return {**{k: counts.get(k, 0) for k in keys}, INVALID: counts.get(INVALID, 0)}


@dataclass(frozen=True)
class TaskArrays:
    """One method's answers on one task, aligned: seeds × questions sorted by id."""

    task: str
    answer_type: str
    seeds: tuple
    ids: tuple[str, ...]
    answers: tuple[str, ...]  # gold, one per question
    correct: np.ndarray  # [S, Q] bool
    preds: np.ndarray  # [S, Q] object (predicted label strings)

    @property
    def is_label_task(self) -> bool:
        return self.answer_type in LABEL_TYPES


def _rows_by_task(rows: Sequence[dict], seed) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for row in rows:
        missing = {"id", "task", "answer", "answer_type"} - set(row)
        if missing:
            raise ValueError(f"seed {seed!r}: prediction row lacks {sorted(missing)}")
        by_id = out.setdefault(row["task"], {})
        if row["id"] in by_id:
            raise ValueError(f"seed {seed!r}: question id {row['id']!r} appears twice "
                             f"in task {row['task']!r}")
        by_id[row["id"]] = row
    return out


def _check_same(what: str, ref: dict, seed_ref, other: dict, seed) -> None:
    if set(ref) != set(other):
        only_a, only_b = sorted(set(ref) - set(other)), sorted(set(other) - set(ref))
        raise ValueError(f"seeds {seed_ref!r} and {seed!r} were evaluated on different {what}: "
                         f"only in {seed_ref!r}: {only_a[:5]}, only in {seed!r}: {only_b[:5]}"
                         f"{' (first 5 shown)' if max(len(only_a), len(only_b)) > 5 else ''}")


def aligned_by_task(rows_by_seed: Mapping, score: str = "flexible") -> dict[str, TaskArrays]:
    """``{seed: [prediction rows]}`` of ONE method -> ``{task: TaskArrays}``.

    Rows are those written by ``pst_distill.evaluate.score`` (``id, task, answer,
    answer_type, pred_<score>, correct_<score>``). Questions are sorted by id, seeds by key
    (the same seed keys pair methods). Fails if seeds differ in tasks, question ids or gold
    answers, or a row lacks a field.
    """
    if score not in ("flexible", "strict"):
        raise ValueError(f"score must be 'flexible' or 'strict', got {score!r}")
    if not rows_by_seed:
        raise ValueError("no seeds given")
    seeds = _sorted_seeds(rows_by_seed)
    grouped = {s: _rows_by_task(rows_by_seed[s], s) for s in seeds}
    ref = grouped[seeds[0]]
    for s in seeds[1:]:
        _check_same("tasks", ref, seeds[0], grouped[s], s)
        for task in ref:
            _check_same(f"question ids of task {task!r}", ref[task], seeds[0], grouped[s][task], s)
    return {task: _task_arrays(task, [grouped[s][task] for s in seeds], tuple(seeds), score)
            for task in sorted(ref)}


def _sorted_seeds(seeds) -> list:
    try:
        return sorted(seeds)  # 2 before 10
    except TypeError:  # mixed key types
        return sorted(seeds, key=str)


def _task_arrays(task: str, per_seed: list[dict[str, dict]], seeds: tuple, score: str) -> TaskArrays:
    ids = tuple(sorted(per_seed[0]))
    first = per_seed[0]
    answers = tuple(str(first[i]["answer"]) for i in ids)
    for seed, rows in zip(seeds, per_seed):
        for i, gold in zip(ids, answers):
            if str(rows[i]["answer"]) != gold:
                raise ValueError(f"task {task!r}, question {i!r}: gold answer differs between "
                                 f"seeds ({gold!r} vs {rows[i]['answer']!r} in seed {seed!r})")
            for key in (f"pred_{score}", f"correct_{score}"):
                if key not in rows[i]:
                    raise ValueError(f"seed {seed!r}: prediction row {i!r} lacks {key!r}")
    correct = np.array([[bool(rows[i][f"correct_{score}"]) for i in ids] for rows in per_seed])
    preds = np.array([[str(rows[i][f"pred_{score}"]) for i in ids] for rows in per_seed], dtype=object)
    return TaskArrays(task, str(first[ids[0]]["answer_type"]), seeds, ids, answers, correct, preds)


def check_aligned(a: TaskArrays, b: TaskArrays, names: tuple[str, str] = ("A", "B")) -> None:
    """Raise unless two methods' arrays cover the same seeds and question ids (same order)."""
    if a.seeds != b.seeds:
        raise ValueError(f"task {a.task!r}: {names[0]} has seeds {list(a.seeds)}, "
                         f"{names[1]} has seeds {list(b.seeds)}; a paired comparison needs the same")
    if a.ids != b.ids:
        raise ValueError(f"task {a.task!r}: {names[0]} and {names[1]} were evaluated on different "
                         f"question ids ({len(a.ids)} vs {len(b.ids)} questions)")
