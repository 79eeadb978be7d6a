"""The robustness sweep: its DVC overrides, picking its experiments out of `dvc exp show
--json`, the accuracy curves and the report, on constructed summaries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from pst_distill.__main__ import main
from pst_distill.methods import METHODS
from pst_distill.report.sweep import (SweepError, accuracy_curves, collect_points,
                                      failed_experiments, grid_override, markdown,
                                      sweep_overrides)

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("coin_flip", "multistep_arithmetic")
METHODS3 = ("pre_thinking", "post_thinking", "pst")


def acc(method: str, group: str, frac: float) -> dict:
    """A distinct, recognisable figure per (method, group, frac)."""
    mean = round(0.9 - 0.4 * frac - 0.1 * METHODS3.index(method) - 0.01 * len(group), 4)
    return {"mean": mean, "lo": round(mean - 0.1, 4), "hi": round(mean + 0.05, 4), "n_seeds": 2}


def summary(frac: float, methods=METHODS3) -> dict:
    groups = (*TASKS, "overall")
    return {"methods": {m: {"accuracy": {g: acc(m, g, frac) for g in groups},
                            "tokens_per_question": 3.0} for m in methods},
            "baselines": {g: {"majority": 0.5, "best_constant": 0.55} for g in groups}}


def exp(name: str, frac, *, mode="numbers", target="seen", seeds=(1, 2), with_summary=True,
        corrupted: int | None = None) -> dict:
    params = {"assemble": {"corrupt_frac": frac, "corrupt_mode": mode, "semantic_target": target},
              "train": {"seeds": list(seeds)}, "report": {"score": "flexible"}}
    metrics = {"reports/summary.json": {"data": summary(float(frac))}} if with_summary else {}
    if corrupted is not None:
        metrics["metrics/assemble.json"] = {"data": {"corrupted": corrupted, "corrupt": {
            "per_task": {"multistep_arithmetic": corrupted}}}}
    rev = {"rev": name.encode().hex().ljust(40, "0"), "name": name,
           "data": {"params": {"params.yaml": {"data": params}}, "metrics": metrics}}
    return {"name": name, "revs": [rev]}


def exp_show(*exps) -> list[dict]:
    """The layout of `dvc exp show --json` (DVC 3): baselines, each with its experiments."""
    return [{"rev": "workspace", "name": None, "data": {}, "experiments": None},
            {"rev": "a" * 40, "name": "main", "data": {}, "experiments": list(exps)}]


# ------------------------------------------------------------------ overrides
def all_methods(params: dict) -> dict:
    """The params with all six methods trained (the default trains four)."""
    params["assemble"]["methods"] = list(METHODS)
    params["train"]["methods"] = {m: params["train"]["methods"].get(m, {}) for m in METHODS}
    return params


def test_overrides_keep_only_the_compared_methods():
    params = all_methods(yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert sweep_overrides(params) == ["~train.methods.answer_only", "~train.methods.step_by_step",
                                       "~train.methods.adaptive"]
    assert sweep_overrides(params, list(params["train"]["methods"])) == []


@pytest.mark.parametrize("params, methods, match", [
    ({"train": {"methods": {"pst": {}}}}, METHODS3, "train.methods lacks pre_thinking, post_thinking"),
    ({"train": {"methods": {m: {} for m in METHODS3}}, "assemble": {"methods": ["pst"]}},
     METHODS3, "assemble.methods lacks pre_thinking, post_thinking"),
    ({"train": {"methods": {"pst": {}}}}, ["cot"], "cot"),
    ({"train": {"methods": {"pst": {}}}}, [], "none"),
])
def test_overrides_refuse_what_the_params_cannot_run(params, methods, match):
    with pytest.raises(SweepError, match=match):
        sweep_overrides(params, methods)


def test_grid_override():
    assert grid_override([0, 0.25, 0.5]) == "assemble.corrupt_frac=0,0.25,0.5"
    for bad, match in (([0, 1.5], r"\[0, 1\]"), ([0.25, 0.25], "twice"), ([], r"\[0, 1\]")):
        with pytest.raises(SweepError, match=match):
            grid_override(bad)


def test_dvc_applies_the_overrides_as_the_sweep_expects(tmp_path):
    """DVC's own -S machinery (Hydra): the grid gives one experiment per fraction, `~`
    removes the other methods, the rest of params.yaml is kept."""
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides, get_hydra_sweeps

    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    base = yaml.safe_load(params.read_text())
    overrides = [grid_override([0, 0.25, 0.5]), *sweep_overrides(base)]
    sweeps = get_hydra_sweeps(to_path_overrides(overrides))
    assert len(sweeps) == 3
    apply_overrides(params, sweeps[1]["params.yaml"])
    after = yaml.safe_load(params.read_text())
    assert after["assemble"]["corrupt_frac"] == 0.25
    assert list(after["train"]["methods"]) == list(METHODS3)
    assert after["train"]["methods"]["pst"] == base["train"]["methods"]["pst"]
    assert after["assemble"]["methods"] == base["assemble"]["methods"]
    assert {k: v for k, v in after.items() if k not in ("assemble", "train")} == \
           {k: v for k, v in base.items() if k not in ("assemble", "train")}


# ------------------------------------------------------------------ collecting
def test_collect_picks_the_sweep_by_name_sorted_by_fraction():
    show = exp_show(exp("rob-3", 0.5, corrupted=6), exp("other-1", 0.25), exp("rob-1", 0, corrupted=0),
                    exp("rob-2", 0.25, corrupted=3), exp("robust", 0.1))
    points = collect_points(show, "rob")
    assert [(p.name, p.frac) for p in points] == [("rob-1", 0.0), ("rob-2", 0.25), ("rob-3", 0.5)]
    assert points[2].corrupted == {"total": 6, "multistep_arithmetic": 6}
    assert (points[0].mode, points[0].semantic_target, points[0].seeds) == ("numbers", "seen", [1, 2])
    assert [p.frac for p in collect_points(show, "robust")] == [0.1]  # a single-fraction sweep


@pytest.mark.parametrize("exps, match", [
    ([exp("s-1", 0), exp("s-2", 0.25, mode="swap")], "differ in mode"),
    ([exp("s-1", 0), exp("s-2", 0.25, target="clean")], "differ in semantic_target"),
    ([exp("s-1", 0), exp("s-2", 0.25, seeds=(1,))], "differ in seeds"),
    ([exp("s-1", 0), exp("s-2", 0)], "appears twice"),
    ([exp("s-1", 0), exp("s-2", 0.5, with_summary=False)], "s-2: no reports/summary.json"),
    ([exp("t-1", 0)], "no experiment named s"),
])
def test_collect_refuses_a_sweep_that_is_not_one(exps, match):
    with pytest.raises(SweepError, match=match):
        collect_points(exp_show(*exps), "s")


def test_curves_carry_each_experiments_figures():
    points = collect_points(exp_show(exp("s-2", 0.5), exp("s-1", 0)), "s")
    curves = accuracy_curves(points)
    assert list(curves) == [*TASKS, "overall"]
    assert list(curves["overall"]) == list(METHODS3)  # METHODS order
    for group, by_method in curves.items():
        for method, line in by_method.items():
            assert [pt["frac"] for pt in line] == [0.0, 0.5]
            assert [{k: pt[k] for k in ("mean", "lo", "hi", "n_seeds")} for pt in line] == \
                   [acc(method, group, 0.0), acc(method, group, 0.5)]


# ------------------------------------------------------------------ report
def test_markdown_tables_and_settings():
    points = collect_points(exp_show(exp("s-1", 0, corrupted=0), exp("s-2", 0.25, corrupted=4)), "s")
    md = markdown("s", points, "robustness.png")
    pst_overall = acc("pst", "overall", 0.25)
    row = next(ln for ln in md.split("## overall")[1].splitlines() if ln.startswith("| pst |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == f"{pst_overall['mean']:.3f} [{pst_overall['lo']:.3f}, {pst_overall['hi']:.3f}]"
    assert "| 0.25 | 4 | 4 |" in md  # corrupted rationales per fraction
    assert "`assemble.semantic_target` = `seen`" in md and "corrupt_mode` = `numbers`" in md
    assert "| _majority of train_ | 0.500 | 0.500 |" in md
    assert "![accuracy against corrupt_frac](robustness.png)" in md


def test_markdown_says_when_pst_saw_clean_targets():
    points = collect_points(exp_show(exp("s-1", 0, target="clean")), "s")
    assert "CLEAN rationale" in markdown("s", points, None)


def test_main_writes_report_and_plot(tmp_path, capsys):
    show = tmp_path / "show.json"
    show.write_text(json.dumps(exp_show(exp("s-1", 0), exp("s-2", 0.25), exp("s-3", 0.5))))
    out, png = tmp_path / "r" / "robustness.md", tmp_path / "r" / "robustness.png"
    assert main(["sweep", "collect", "s", "--exp-show", str(show), "--out-dir",
                 str(tmp_path / "r")]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "(robustness.png)" in out.read_text()
    assert main(["sweep", "collect", "nope", "--exp-show", str(show), "--out-dir",
                 str(tmp_path / "r")]) == 2
    assert "error: no experiment named nope" in capsys.readouterr().err


def test_main_prints_the_overrides(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(all_methods(yaml.safe_load((ROOT / "params.yaml").read_text())),
                                      sort_keys=False))
    assert main(["sweep", "overrides", "--params", str(params), "--fractions", "0,0.5"]) == 0
    assert capsys.readouterr().out.split() == ["assemble.corrupt_frac=0,0.5",
                                               "~train.methods.answer_only",
                                               "~train.methods.step_by_step",
                                               "~train.methods.adaptive"]
    assert main(["sweep", "overrides", "--params", str(params), "--methods", "pst,cot"]) == 2


def test_failed_experiments_of_the_sweep_only():
    status = ("Task     Name        Created    Status\n"
              "a1b2c3d  rob-1       10:01 AM   Success\n"
              "d4e5f6a  rob-2       10:02 AM   Failed\n"
              "0a1b2c3  other-1     09:00 AM   Failed\n"
              "9f8e7d6  rob         10:03 AM   Failed\n")
    assert failed_experiments(status, "rob") == ["rob-2", "rob"]
